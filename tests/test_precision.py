"""bf16 autocast chosen by measurement (``dwml.precision.choose_bf16``): the decision rule on injected
timings, the cache, and the rule where no probe runs."""
from __future__ import annotations

import json

import pytest
import torch

from dwml import precision
from dwml.precision import PrecisionChoice, choose_bf16, decide_bf16, probe_key, time_passes


def test_decide_keeps_float32_for_this_machines_dwml_numbers_and_bf16_for_a_clear_gain():
    # The measurements on a 2-core AMD EPYC with AVX512-BF16: DWML 196 ms a step in float32 against
    # 281 ms under bf16 autocast (0.70x); mlm 1.09x faster under bf16.
    dwml = decide_bf16([0.196, 0.197, 0.195], [0.281, 0.280, 0.283])
    assert dwml.bf16 is False and "0.70x" in dwml.reason and "float32" in dwml.reason
    mlm = decide_bf16([0.100] * 3, [0.100 / 1.09] * 3)
    assert mlm.bf16 is True and mlm.fp32_s == pytest.approx(0.1) and mlm.bf16_s == pytest.approx(0.1 / 1.09)


def test_decide_uses_medians_and_gives_ties_and_small_gains_to_float32():
    # one slow outlier in float32 must not tip the decision
    assert decide_bf16([0.1, 0.1, 5.0], [0.099, 0.099, 0.099]).bf16 is False
    assert decide_bf16([0.1], [0.1]).bf16 is False
    at_margin = 1 - precision.BF16_MARGIN
    assert decide_bf16([1.0], [at_margin * 0.999]).bf16 is True
    assert decide_bf16([1.0], [at_margin * 1.001]).bf16 is False


@pytest.mark.parametrize("fp32, bf16", [([], [0.1]), ([0.1], []), ([0.1, -1.0], [0.1]), ([0.1], [0.0])])
def test_decide_refuses_missing_or_non_positive_timings(fp32, bf16):
    with pytest.raises(ValueError, match="decide_bf16"):
        decide_bf16(fp32, bf16)


def test_time_passes_times_only_the_calls_after_the_warmup():
    now = [0.0]
    calls = []

    def clock():
        return now[0]

    def run_pass():
        calls.append(1)
        now[0] += len(calls)  # the k-th call takes k seconds

    assert time_passes(run_pass, n=3, warmup=2, clock=clock) == [3.0, 4.0, 5.0]
    assert len(calls) == 5


def test_explicit_settings_pass_through_without_a_probe():
    def probe(bf16):
        raise AssertionError("no probe for an explicit setting")

    assert choose_bf16(True, "cpu", probe) == PrecisionChoice(True, "set by train.mixed_precision")
    assert choose_bf16(False, "cpu", probe).bf16 is False
    with pytest.raises(ValueError, match="train.mixed_precision='fast'"):
        choose_bf16("fast", "cpu", probe)


def test_a_cpu_without_bf16_instructions_stays_float32_without_probing(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    choice = choose_bf16("auto", "cpu", probe=lambda bf16: pytest.fail("probed"))
    assert choice.bf16 is False and choice.reason.startswith("rule:")


def test_auto_probes_both_ways_caches_per_key_and_reuses(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    cache = tmp_path / "precision.json"
    asked = []

    def probe(bf16):
        asked.append(bf16)
        return [0.28] * 3 if bf16 else [0.20] * 3

    first = choose_bf16("auto", "cpu", probe, key="k1", cache=cache)
    assert first.bf16 is False and asked == [False, True] and first.reason.startswith("measured")
    stored = json.loads(cache.read_text())
    assert stored["k1"]["bf16"] is False and stored["k1"]["fp32_s"] == pytest.approx(0.20)
    again = choose_bf16("auto", "cpu", lambda bf16: pytest.fail("probed again"), key="k1", cache=cache)
    assert again.bf16 is False and again.reason.startswith("cached") and again.bf16_s == pytest.approx(0.28)
    # another shape probes on its own and keeps the first key
    other = choose_bf16("auto", "cpu", lambda bf16: [0.1] * 3 if bf16 else [0.2] * 3, key="k2", cache=cache)
    assert other.bf16 is True and set(json.loads(cache.read_text())) == {"k1", "k2"}


def test_an_unreadable_cache_is_decided_again_and_rewritten(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    cache = tmp_path / "precision.json"
    cache.write_text("{not json")
    choice = choose_bf16("auto", "cpu", lambda bf16: [0.1] * 3 if bf16 else [0.2] * 3, key="k", cache=cache)
    assert choice.bf16 is True and json.loads(cache.read_text())["k"]["bf16"] is True


def test_without_a_probe_auto_follows_the_rule(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    assert choose_bf16("auto", "cpu").bf16 is True
    if torch.cuda.is_available():
        assert choose_bf16("auto", "cuda").bf16 == torch.cuda.is_bf16_supported()


def test_probe_key_is_stable_and_tells_shapes_apart():
    a = probe_key("cpu", {"method": "dwml", "arch": [[2, 2, 176]], "batch": 128})
    assert a == probe_key("cpu", {"batch": 128, "arch": [[2, 2, 176]], "method": "dwml"})
    assert a != probe_key("cpu", {"method": "mlm", "arch": [[2, 2, 176]], "batch": 128})
    assert len(a) == 16


def test_cache_file_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DWML_CACHE_DIR", str(tmp_path / "c"))
    assert precision.cache_file() == tmp_path / "c" / "precision.json"
    monkeypatch.delenv("DWML_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert precision.cache_file() == tmp_path / "x" / "dwml" / "precision.json"


def test_recorded_choice_reads_a_runs_precision_file(tmp_path):
    rec = tmp_path / "precision.json"
    assert precision.recorded_choice(rec) is None  # absent
    rec.write_text("{not json")
    assert precision.recorded_choice(rec) is None  # unreadable: decided again
    rec.write_text('{"bf16": "yes"}')
    assert precision.recorded_choice(rec) is None  # not a decision
    rec.write_text('{"bf16": true, "reason": "measured: 1.72x", "fp32_s": 0.7, "bf16_s": 0.41}')
    kept = precision.recorded_choice(rec)
    assert kept == PrecisionChoice(True, "kept from the run's start (precision.json): measured: 1.72x", 0.7, 0.41)
