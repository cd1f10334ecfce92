"""The paper's claims as data and their verdicts on synthetic rows: holds, does not hold, not
measured; trends above chance; differences against the seed spread; the report's section."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ltsweep.report import write_report
from ltsweep.report.claims import CLAIMS, FAILS, HOLDS, UNMEASURED, Claim, Side, verdicts
from ltsweep.store.results import write_rows

BY_ID = {c.id: c for c in CLAIMS}
COMMON = {"sweep": "claims", "noise_type": "symmetric", "n_train": 1000, "actual_noise": 0.0,
          "acc_many": 0.5, "acc_medium": 0.5, "acc_few": 0.5, "seconds": 1.0,
          "started": "2026-01-01T00:00:00Z", "host": "h", "version": "0", "status": "ok"}  # fmt: skip


def two(method: str, loss: str, noise: float, acc: float, seed: int = 0, **kw) -> dict:
    """A two-stage row (accuracy in %)."""
    return dict(COMMON, stage="two-stage", method=method, loss=loss, noise=noise, acc=acc / 100,
                seed=seed, data_seed=0, gamma=kw.pop("gamma", 100.0), dataset="cifar10",
                head=kw.pop("head", "full"), pretrain_key=f"pt-{method}", pretrain_epochs=50,
                **kw)  # fmt: skip


def one(method: str, noise: float, acc: float, seed: int = 0, **kw) -> dict:
    """A single-stage row (accuracy in %)."""
    return dict(COMMON, stage="single-stage", method=method, loss=method, noise=noise,
                acc=acc / 100, seed=seed, data_seed=0, gamma=kw.pop("gamma", 100.0),
                dataset="cifar10", head=None, pretrain_key=None, pretrain_epochs=0,
                **kw)  # fmt: skip


def verdict_of(claim_id: str, rows: list[dict]):
    (found,) = verdicts(pd.DataFrame(rows), [BY_ID[claim_id]])
    return found


def test_claims_are_data_with_a_source_each():
    assert len({c.id for c in CLAIMS}) == len(CLAIMS)
    for c in CLAIMS:
        assert c.source and c.says and c.kind in ("ge", "best", "grows", "at_least"), c.id
        assert (c.b is None) == (c.kind == "at_least"), c.id
    assert BY_ID["every-ssl-method-60-at-60"].bound == 60.0


def test_a_claim_that_holds_and_one_that_does_not():
    rows = [two("barlow", "la+sl", 0.8, 40.0), one("la+sl", 0.8, 30.0)]
    v = verdict_of("two-stage-beats-single-stage-at-80", rows)
    assert v.verdict == HOLDS
    assert "40.0 vs 30.0 (+10.0)" in v.ours and "80 %" in v.ours
    assert v.seeds == "1 (seed 0; data seed 0)"
    assert v.spread == "unknown (one seed per cell)"

    rows = [two("barlow", "la+sl", 0.8, 18.1), one("la+sl", 0.8, 23.7)]
    v = verdict_of("two-stage-beats-single-stage-at-80", rows)
    assert v.verdict == FAILS and "(-5.6)" in v.ours


def test_every_cell_must_hold():
    """LA+SL against CE at 20-80 %: one cell the other way round and the claim fails."""
    rows = [two("barlow", "la+sl", n, a) for n, a in ((0.2, 42.5), (0.4, 34.0), (0.6, 28.0))]
    rows += [two("barlow", "ce", n, a) for n, a in ((0.2, 37.4), (0.4, 34.2), (0.6, 25.7))]
    rows += [two("barlow", "la+sl", 0.0, 10.0), two("barlow", "ce", 0.0, 50.0)]  # not >= 20 %
    v = verdict_of("la-sl-beats-ce", rows)
    assert v.verdict == FAILS
    assert "2 of 3 cells" in v.ours and "34.0 vs 34.2 (-0.2)" in v.ours
    assert len(v.cells) == 3


def test_not_measured_names_the_missing_cells():
    v = verdict_of("two-stage-beats-single-stage-at-80", [two("barlow", "la+sl", 0.8, 40.0)])
    assert v.verdict == UNMEASURED
    assert "single-stage LA+SL" in v.missing and "80 % noise" in v.missing
    assert v.ours == "" and v.seeds == ""
    v = verdict_of("two-stage-beats-dividemix", [two("barlow", "la+sl", 0.2, 40.0)])
    assert v.verdict == UNMEASURED and "single-stage DivideMix" in v.missing
    # no rows at all: every claim is not measured
    assert {v.verdict for v in verdicts(pd.DataFrame(columns=list(one("ce", 0, 0))))} == {
        UNMEASURED
    }


def test_a_gap_that_shrinks_toward_chance_is_not_a_growing_lead():
    """CIFAR-10, chance 10 %: two-stage 50 -> 13.9, single-stage 90 -> 18. The gap in points
    shrinks from -40 to -4.1, but above chance two-stage keeps 1/2 of single-stage's accuracy
    and then 0.49 of it: its lead does not grow."""
    rows = [two("barlow", "ce", 0.0, 50.0), two("barlow", "ce", 0.8, 13.9)]
    rows += [one("ce", 0.0, 90.0), one("ce", 0.8, 18.0)]
    v = verdict_of("two-stage-lead-grows-with-noise", rows)
    assert v.verdict == FAILS
    assert "0.50 / 0.49" in v.ours
    assert v.cells["value"].iloc[0] == pytest.approx(3.9 / 8 - 0.5)
    # a real gain above chance: 50 -> 16 against 90 -> 18 is 0.5 -> 0.75
    rows[1] = two("barlow", "ce", 0.8, 16.0)
    v = verdict_of("two-stage-lead-grows-with-noise", rows)
    assert v.verdict == HOLDS and "0.50 / 0.75" in v.ours


def test_trend_needs_two_noise_levels():
    rows = [two("barlow", "ce+sl", 0.2, 40.0), two("barlow", "ce", 0.2, 39.0)]
    v = verdict_of("sl-gain-grows-with-noise", rows)
    assert v.verdict == UNMEASURED and "fewer than two noise levels" in v.missing


def test_difference_against_the_seed_spread():
    """Three seeds: +1.0 +- 0.2 is beyond the spread, +0.33 +- 2.75 is not; the claim still
    holds (both means >= 0) and the page says how many cells are clear of the noise."""
    rows = []
    for seed, (d20, d40) in enumerate(((1.0, 3.0), (1.2, -2.5), (0.8, 0.5))):
        rows += [
            two("barlow", "la+sl", 0.2, 40.0 + d20, seed),
            two("barlow", "ce", 0.2, 40.0, seed),
        ]
        rows += [two("barlow", "la+sl", 0.4, 30.0 + d40, seed), two("barlow", "ce", 0.4, 30.0, seed)]  # fmt: skip
    v = verdict_of("la-sl-beats-ce", rows)
    assert v.verdict == HOLDS
    cells = v.cells.set_index("noise")
    assert cells.loc[0.2, "spread"] == pytest.approx(0.2)
    assert cells.loc[0.4, "value"] == pytest.approx(1 / 3)
    assert list(cells["beyond"]) == [True, False]
    assert list(cells["n"]) == [3, 3]
    assert v.spread == "1 of 2 cells beyond the seed spread"
    assert v.seeds == "3 (seeds 0, 1, 2; data seed 0)"


def test_best_loss_needs_its_share_of_cells():
    losses = {"ce": 40.0, "ce+sl": 41.0, "la": 42.0}
    rows = [two("barlow", loss, n, a) for n in (0.0, 0.2, 0.4, 0.6) for loss, a in losses.items()]
    rows += [two("barlow", "la+sl", n, a) for n, a in ((0.0, 43), (0.2, 43), (0.4, 43), (0.6, 41.5))]  # fmt: skip
    v = verdict_of("la-sl-is-the-best-loss", rows)
    assert v.verdict == HOLDS and "best in 3 of 4 cells" in v.ours  # 3/4 is "almost always"
    assert "vs LA 42.0 (-0.5)" in v.ours
    rows[-2] = two("barlow", "la+sl", 0.4, 41.9)
    assert verdict_of("la-sl-is-the-best-loss", rows).verdict == FAILS


def test_head_switch_compares_heads_on_the_methods_side_of_the_switch():
    # Barlow switches at 20 %: at 40 % the last layer alone should win, at 20 % the full head
    rows = [two("barlow", "la+sl", 0.4, 35.0, head="last"), two("barlow", "la+sl", 0.4, 33.0)]
    rows += [two("barlow", "la+sl", 0.2, 40.0, head="last"), two("barlow", "la+sl", 0.2, 41.0)]
    assert verdict_of("head-switch-above", rows).verdict == HOLDS
    assert verdict_of("head-switch-below", rows).verdict == HOLDS
    v = verdict_of("head-switch-above", rows[2:])  # nothing above the switch
    assert v.verdict == UNMEASURED


def test_a_bound_and_a_custom_claim():
    rows = [two("barlow", "la+sl", 0.6, 61.0), two("simsiam", "la+sl", 0.6, 59.0)]
    v = verdict_of("every-ssl-method-60-at-60", rows)
    assert v.verdict == FAILS and "1 of 2 cells" in v.ours
    claim = Claim("x", "SimSiam beats Barlow", "ge", Side("two-stage", "simsiam", "la+sl"),
                  Side("two-stage", "barlow", "la+sl"), gamma="any")  # fmt: skip
    (found,) = verdicts(pd.DataFrame(rows), [claim])
    assert found.verdict == FAILS and "59.0 vs 61.0 (-2.0)" in found.ours


def test_the_report_has_a_claims_section(tmp_path: Path):
    rows = [two("barlow", "la+sl", n, 40 - 10 * n) for n in (0.0, 0.4, 0.8)]
    rows += [two("barlow", "ce", n, 38 - 10 * n) for n in (0.0, 0.4, 0.8)]
    rows += [one("la+sl", n, 50 - 30 * n) for n in (0.0, 0.4, 0.8)]
    for i, r in enumerate(rows):
        r["unit_key"] = f"u{i}"
        r["epochs"] = 10
        r["head"] = r["head"] or ""
        r["pretrain_key"] = r["pretrain_key"] or ""
    write_rows(tmp_path / "run" / "results", "rows", rows)
    index = write_report(tmp_path / "run", tmp_path / "rep", source="`results.parquet`")
    md = index.read_text()
    assert "Report of `results.parquet`" in md
    section = md.split("## Claims of the paper")[1].split("\n## ")[0]
    assert "`two-stage-beats-single-stage-at-80`" in section
    assert "| does not hold |" in section and "| not measured |" in section
    assert "| holds |" in section  # LA+SL >= CE
    assert "above chance" in section
