"""dwml: weighted mutual learning for small masked language models.

A tested reproduction of Iyer (2024), "When Babies Teach Babies" (arXiv 2411.16487), on top of
Zhang et al. (2022), "Weighted Mutual Learning with Diversity-Driven Model Compression".
README.md's Layout says where things are; CONTRIBUTING.md's floors say how the modules depend on each other.
"""

__version__ = "0.1.0"
