"""Keys made on first start by several processes at once (real processes, real files): one wins, all
read the same whole file."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from infrastructure.files import create_once


def _race(path: str, start: object, results: object, n: int) -> None:
    start.wait()  # type: ignore[attr-defined]
    content = (f"key of racer {n}\n" * 20_000).encode()  # large enough that a plain write is seen half done
    won = create_once(Path(path), content)
    results.put((n, won, Path(path).read_bytes() == content, len(Path(path).read_bytes())))  # type: ignore[attr-defined]


def test_racing_processes_agree_on_one_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.pem"
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    racers = [context.Process(target=_race, args=(str(path), start, results, n)) for n in range(6)]
    for racer in racers:
        racer.start()
    start.set()
    outcomes = [results.get(timeout=30) for _ in racers]
    for racer in racers:
        racer.join(30)

    winners = [n for n, won, _, _ in outcomes if won]
    assert len(winners) == 1
    expected = (f"key of racer {winners[0]}\n" * 20_000).encode()
    assert path.read_bytes() == expected and {size for *_, size in outcomes} == {len(expected)}
    assert (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["audit.pem"]  # no temporary file left behind
    assert os.access(path, os.R_OK)
