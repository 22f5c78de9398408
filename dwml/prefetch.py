"""Batches built ahead of the device on a background thread, resumable bit for bit.

The training loop draws, masks, packs and merges its micro-batches on the host (``dwml.batches``); on a GPU
that work would otherwise sit in series with the device's. :class:`Prefetcher` runs a producer (one
optimizer step's host batches) on a thread, ``depth`` items ahead, and hands them out in order. The items
are exactly those the producer would give when called in series: the producer alone draws from its
generator, one item after another.

A checkpoint must hold the state of the first item *not yet used*, not the producer's (which is ahead):
each item is queued with the state its producer had before making it, and :meth:`Prefetcher.state_dict`
stops the thread, drops what was built ahead, puts the producer back to that state and returns it; the
thread starts again at the next :meth:`Prefetcher.next`.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable


class Prefetcher:
    """``produce()`` called ahead on a thread, ``depth`` items ahead. ``get_state()`` / ``set_state(s)``
    read and set the producer's state (a batcher's ``state_dict`` / ``load_state_dict``). An exception in
    the producer is raised by the :meth:`next` that would have returned its item."""

    def __init__(self, produce: Callable[[], Any], get_state: Callable[[], Any], set_state: Callable[[Any], None],
                 depth: int = 2):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth (train.prefetch)={depth!r}: must be an integer >= 1")
        self.produce, self.get_state, self.set_state, self.depth = produce, get_state, set_state, depth
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self, q: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            state = self.get_state()
            try:
                item, err = self.produce(), None
            except BaseException as e:  # handed to the consumer, raised where the item was wanted
                item, err = None, e
            while True:
                if stop.is_set():  # made but never queued: put the producer back before it
                    self.set_state(state)
                    return
                try:
                    q.put((state, item, err), timeout=0.05)
                    break
                except queue.Full:
                    continue
            if err is not None:
                return

    def _start(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(target=self._run, args=(self._queue, self._stop), daemon=True,
                                        name="dwml-prefetch")
        self._thread.start()

    def next(self) -> Any:
        """The next item, in the order the producer makes them."""
        if self._thread is None:
            self._start()
        _, item, err = self._queue.get()
        if err is not None:
            self._halt()
            raise err
        return item

    def _halt(self) -> list:
        """Stop the thread; return the (state, item, error) entries it had built and not handed out."""
        if self._thread is None:
            return []
        self._stop.set()
        self._thread.join()
        left = []
        while True:
            try:
                left.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._thread, self._queue = None, None
        return left

    def state_dict(self) -> Any:
        """The producer's state before the first item not yet handed out (the thread is stopped, the items
        built ahead are dropped and the producer is put back there; :meth:`next` starts it again)."""
        left = self._halt()
        if left:
            self.set_state(left[0][0])
        return self.get_state()

    def close(self) -> None:
        """Stop the thread (the producer is left wherever it got to; call :meth:`state_dict` to rewind)."""
        self._halt()
