"""The per-study fit store: kept across restarts, the best fit kept, one fit at a time."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import SimpleITK as sitk

from agent.deface.studyfit import Fit, StudyFits, study_key


def a_fit(score: float, source: str = "S1", template: str = "t") -> Fit:
    tx = sitk.AffineTransform(3)
    tx.SetCenter((1.0, 2.0, 3.0))
    tx.SetMatrix((1.1, 0.0, 0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 1.0))
    tx.SetTranslation((4.0, -5.0, 6.0))
    return Fit.from_transform(tx, dice=0.9, scales=(1.1, 1.0, 0.9), rotation_deg=5.0,
                              score=score, source=source, face_seen=0.8, template=template)


def test_kept_across_restarts_and_the_best_wins(tmp_path: Path) -> None:
    key = study_key("STUDY-PSEUDONYM", "2.25.123")
    assert key and study_key("", "2.25.1") is None and study_key("S", "") is None
    store = StudyFits(tmp_path)
    assert store.get(key) is None
    assert store.offer(key, a_fit(0.3, "EPI"))
    assert not store.offer(key, a_fit(0.2, "WORSE"))
    assert store.offer(key, a_fit(1.0, "T1"))
    again = StudyFits(tmp_path).get(key)  # a restarted agent
    assert again is not None and again.source == "T1"
    assert again.transform.GetMatrix() == a_fit(1.0).transform.GetMatrix()
    # Another template means another fit; damaged files are ignored.
    assert StudyFits(tmp_path).get(key, template="other") is None
    (tmp_path / f"{key}.json").write_text("{not json")
    assert StudyFits(tmp_path).get(key) is None


def test_files_hold_no_identifiers(tmp_path: Path) -> None:
    key = study_key("SITE-ST-1234", "2.25.99")
    StudyFits(tmp_path).offer(key, a_fit(1.0, "SITE-SE-77"))
    (path,) = tmp_path.glob("*.json")
    assert "SITE-ST-1234" not in path.name and "2.25.99" not in path.name
    data = json.loads(path.read_text())
    assert set(data["fit"]) == {"matrix", "translation", "center", "dice", "scales",
                                "rotation_deg", "score", "source", "face_seen", "method",
                                "template", "created"}


def test_one_series_of_a_study_fits_at_a_time(tmp_path: Path) -> None:
    store = StudyFits(tmp_path)
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with store.claim("k"):
            inside.set()
            time.sleep(0.2)
            order.append("first")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(5)
    with store.claim("k"):
        order.append("second")
    t.join()
    assert order == ["first", "second"]
    with store.claim(None):  # no key: nothing to coordinate
        pass


def test_waiting_for_a_partner_is_bounded_and_survives_restarts(tmp_path: Path) -> None:
    store = StudyFits(tmp_path, partner_wait=3600)
    assert store.may_wait("series-a")
    marker = tmp_path / "waiting" / "series-a"
    marker.write_text(repr(time.time() - 7200))  # it started waiting two hours ago
    assert not StudyFits(tmp_path, partner_wait=3600).may_wait("series-a")
    store.done_waiting("series-a")
    assert not marker.exists()
    closed = StudyFits(tmp_path, partner_wait=3600)
    closed.partners_expected = False
    assert not closed.may_wait("series-b")


def test_old_fits_are_pruned(tmp_path: Path) -> None:
    import os

    store = StudyFits(tmp_path)
    store.offer("old", a_fit(1.0))
    store.offer("new", a_fit(1.0))
    month = time.time() - 31 * 24 * 3600
    os.utime(tmp_path / "old.json", (month, month))
    assert StudyFits(tmp_path).get("old") is None  # a new store prunes on start
    assert StudyFits(tmp_path).get("new") is not None
