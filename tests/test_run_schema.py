"""The run directory's one schema: what the search writes reads back as the same table, the
report orders a front as the search does, and best/metrics.json round-trips as a record."""

import json
import math
import random

import pandas as pd
import pytest

import graftsearch as gs
from graftsearch.graft._record import (DonorMetrics, ExportInfo, FinalMetrics, GraftMetrics,
                                       SearchPick, SizeReduction, read_metrics)
from graftsearch.optimize._archive import Record
from graftsearch.optimize._result import feasible_front, order_front, order_rows, preference_key
from graftsearch.optimize._runfiles import (COLUMNS, CONVERGENCE_COLUMNS, CONVERGENCE_DTYPES,
                                            DTYPES, RANK, RunFiles, load_run, read_records,
                                            records_frame)
from graftsearch.report._report import pick_best


def _record(bits, params, p, *, feasible=True, violation=0.0, generation=0, extras=None):
    return Record(bits=bits, params=params, size_mib=params * 4 / 2 ** 20, macs=params * 7 + 3,
                  val_accuracy=p, val_loss=math.nan if math.isnan(p) else 1 - p,
                  feasible=feasible, violation=violation, generation=generation,
                  evaluated_at=f"2025-01-01T00:00:{generation:02d}+00:00", extras=extras or {})


RECORDS = [
    _record("010100", 5200, 0.8125, extras={"agreement": 0.5}),
    _record("000001", 900, 0.1 + 0.2, generation=1),  # a float that needs its full repr
    _record("100000", 3100, math.nan, feasible=False, violation=math.inf, generation=2),
    _record("001000", 4100, 0.25, feasible=False, violation=0.35, generation=3,
            extras={"agreement": 1 / 3}),
]

HISTORY = [{"generation": 0, "evaluations": 4, "hypervolume": 0.125, "best_bits": "000001",
            "best_size": 900.0, "best_val_accuracy": 0.30000000000000004, "n_feasible": 2,
            "elapsed_s": 0.5},
           {"generation": 1, "evaluations": 8, "hypervolume": 0.0, "best_bits": None,
            "best_size": None, "best_val_accuracy": None, "n_feasible": 0, "elapsed_s": 1.25}]


def _write(run_dir, records=RECORDS, history=HISTORY):
    files = RunFiles(run_dir)
    files.prepare()
    files.rewrite_evaluations(records)
    files.write_pareto(records, list(range(1, len(records) + 1)))
    files.write_convergence(history)
    return files


def test_the_tables_read_back_as_written(tmp_path):
    _write(tmp_path / "run")
    run = load_run(tmp_path / "run")
    want = records_frame(RECORDS)
    assert list(run.evaluations.columns) == list(COLUMNS) + ["agreement"]
    pd.testing.assert_frame_equal(run.evaluations, want)
    ranked = records_frame(RECORDS, ranks=[1, 2, 3, 4])
    assert list(run.pareto.columns) == list(COLUMNS) + ["agreement", RANK]
    pd.testing.assert_frame_equal(run.pareto, ranked)
    assert run.evaluations["bits"].tolist() == [r.bits for r in RECORDS]  # leading zeros kept
    assert run.evaluations["violation"].iloc[2] == math.inf
    for name, dtype in DTYPES.items():
        if dtype is not str:
            assert run.evaluations[name].dtype == pd.Series([], dtype=dtype).dtype, name
    assert list(run.convergence.columns) == list(CONVERGENCE_COLUMNS)
    for name, dtype in CONVERGENCE_DTYPES.items():
        if dtype is not str:
            assert run.convergence[name].dtype == pd.Series([], dtype=dtype).dtype, name
    assert run.convergence["best_bits"].iloc[0] == "000001"
    assert run.convergence["best_bits"].isna().iloc[1] and math.isnan(run.convergence["best_size"].iloc[1])


def test_an_empty_table_reads_with_the_schema_dtypes(tmp_path):
    files = _write(tmp_path / "run", records=[])
    pd.testing.assert_frame_equal(read_records(files.evaluations), records_frame([]))


def test_the_search_result_frames_are_its_files(tmp_path):
    from graftsearch.optimize._result import SearchResult

    settings = gs.SearchSettings(objective="min-size", p_min=0.5)
    front = feasible_front(RECORDS, settings)
    result = SearchResult(settings=settings, records=RECORDS, front=front, feasible=True,
                          message="", stopped_by="generations", generations=1, evaluations=4,
                          archive_hits=0, history_records=HISTORY)
    run = load_run(result.to_csv(tmp_path / "run"))
    pd.testing.assert_frame_equal(run.evaluations, result.archive)
    pd.testing.assert_frame_equal(run.pareto, result.pareto)
    assert run.objective == "min-size" and run.size_metric == "params"  # no config.json: defaults


# a hand-made front with ties on size, on P and on both (then the bit string decides)
FRONT = [("000011", 2000, 0.9), ("000101", 2000, 0.95), ("001001", 2000, 0.95),
         ("010001", 1000, 0.7), ("100001", 3000, 0.95), ("000111", 3000, 0.99),
         ("001110", 1000, 0.7), ("011000", 500, 0.6), ("110000", 4000, 0.99)]


@pytest.mark.parametrize("objective,metric", [("min-size", "params"), ("max-accuracy", "params"),
                                              ("min-size", "macs"), ("max-accuracy", "size_mib")])
def test_order_front_is_the_search_preference(objective, metric):
    settings = (gs.SearchSettings(objective="min-size", p_min=0.5, size_metric=metric)
                if objective == "min-size" else
                gs.SearchSettings(objective="max-accuracy", size_max=10 ** 9, size_metric=metric))
    records = [_record(b, n, p) for b, n, p in FRONT]
    records.append(_record("111111", 100, 0.4, feasible=False, violation=0.1))
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    frame = records_frame(shuffled)
    want = [r.bits for r in sorted((r for r in records if r.feasible),
                                   key=lambda r: preference_key(r, settings))]
    assert order_front(frame, objective, metric)["bits"].tolist() == want
    # the report's pick is the search's pick
    assert pick_best(frame, objective, metric)["bits"] == feasible_front(records, settings)[0].bits
    # infeasible rows come last, as the search ranks the least violating
    assert order_rows(frame, objective, metric)["bits"].tolist() == want + ["111111"]


def test_order_front_of_a_front_the_search_wrote(tmp_path):
    settings = gs.SearchSettings(objective="max-accuracy", size_max=10 ** 9)
    front = sorted((_record(b, n, p) for b, n, p in FRONT), key=lambda r: preference_key(r, settings))
    _write(tmp_path / "run", records=front)
    run = load_run(tmp_path / "run")
    assert order_front(run.pareto, "max-accuracy")[RANK].tolist() == list(range(1, len(front) + 1))


def _full_metrics() -> FinalMetrics:
    summary = {"n": 10, "accuracy": 0.8, "loss": 0.5, "roc_auc_macro": None}
    return FinalMetrics(
        graftsearch_version=gs.__version__, bits="000101", taps="4;6", selection=[4, 6],
        tap_names=["features.3", "features.5"], image_size=32, mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25], class_names=["a", "b"],
        head={"num_classes": 2, "hidden": 256, "dropout": 0.5},
        graft=GraftMetrics(params=36600, size_mib=0.1396, macs=12345, val=summary, test=summary,
                           per_class=[{"class": "a", "precision": 0.8, "support": 5}],
                           confusion=[[4, 1], [1, 4]], best_epoch=3,
                           history=[{"epoch": 1, "val_loss": 0.7}], fine_tuned=False,
                           fine_tune_history=[]),
        donor=DonorMetrics(name="tiny", params=100000, size_mib=0.38, macs=None, val=None,
                           test=None, note="not measured (donor_metrics=False)."),
        size_reduction=SizeReduction(params=63400, factor=2.73, percent=63.4),
        latency={"graft": {"median_ms": 1.5}, "donor": {"median_ms": 3.0}, "ratio": 2.0},
        memory=None, int8={"error": "no int8 engine in this torch build"},
        settings={"seed": 0, "onnx": None},
        search_pick=SearchPick(search_val_accuracy=0.9, search_source="proxy val", objective="min-size", candidates=[]),
        export=ExportInfo(files=["model.pt"], onnx_note="", max_abs_diff={"torchscript": 0.0}))


def test_metrics_record_round_trips(tmp_path):
    record = _full_metrics()
    data = json.loads(json.dumps(record.to_json()))
    assert FinalMetrics.from_json(data) == record
    assert FinalMetrics.from_json(data).to_json() == data
    (tmp_path / "best").mkdir()
    record.write(tmp_path / "best" / "metrics.json")
    assert read_metrics(tmp_path) == record
    assert read_metrics(tmp_path / "elsewhere") is None


def test_metrics_record_without_a_run_or_export_leaves_those_keys_out():
    record = _full_metrics()
    record.search_pick = record.export = None
    data = record.to_json()
    assert "search_pick" not in data and "export" not in data
    assert FinalMetrics.from_json(data) == record


def test_a_partial_metrics_file_reads_with_none():
    record = FinalMetrics.from_json({"bits": "01", "graft": {"params": 5}})
    assert record.bits == "01" and record.graft.params == 5 and record.graft.test is None
    assert record.donor == DonorMetrics() and record.search_pick is None and record.latency is None


def test_a_damaged_metrics_file_is_a_search_error(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(gs.SearchError, match="not valid JSON"):
        FinalMetrics.read(tmp_path / "metrics.json")


def _front_row(bits, params, acc, se):
    return {"bits": bits, "taps": bits, "n_taps": 1, "deepest_tap": 1, "params": params,
            "size_mib": params * 4 / 2**20, "macs": params, "val_accuracy": acc,
            "val_loss": 1 - acc, "val_accuracy_se": se, "feasible": True, "violation": 0.0,
            "generation": 1, "evaluated_at": "2026-12-01T00:00:00"}


# A hand-made max-accuracy front: 0.93 +- 0.01 is the most accurate; 0.925 and 0.921 are within
# one standard error of it, 0.90 is not; of those within, "0100" (2,000 params) is the smallest.
ONE_SE_FRONT = [("1000", 9_000, 0.930, 0.010), ("0010", 5_000, 0.925, 0.0099),
                ("0100", 2_000, 0.921, 0.0101), ("0001", 1_000, 0.900, 0.011)]


def test_one_se_pick_on_a_hand_made_front():
    import pandas as pd

    from graftsearch.optimize._result import order_front

    frame = pd.DataFrame([_front_row(*r) for r in ONE_SE_FRONT])
    assert list(order_front(frame, "max-accuracy")["bits"]) == ["1000", "0010", "0100", "0001"]
    assert list(order_front(frame, "max-accuracy", pick="one-se")["bits"]) == [
        "0100", "1000", "0010", "0001"]
    frame.loc[0, "val_accuracy_se"] = 0.008  # 0.922 now: "0100" (0.921) falls out of reach
    assert order_front(frame, "max-accuracy", pick="one-se")["bits"].iloc[0] == "0010"
    frame["val_accuracy_se"] = float("nan")  # no standard error: the best stays the pick
    assert order_front(frame, "max-accuracy", pick="one-se")["bits"].iloc[0] == "1000"


def test_one_se_pick_of_records_is_the_one_of_their_table():
    from graftsearch.optimize._archive import Record
    from graftsearch.optimize._result import feasible_front

    records = [Record(**{k: v for k, v in _front_row(*r).items()
                         if k not in ("taps", "n_taps", "deepest_tap")}) for r in ONE_SE_FRONT]
    settings = gs.SearchSettings(objective="max-accuracy", size_max="1M", pick="one-se")
    assert [r.bits for r in feasible_front(records, settings)] == ["0100", "1000", "0010", "0001"]


def test_one_se_pick_needs_max_accuracy():
    with pytest.raises(gs.ParameterError, match="'pick' parameter must be 'best' when objective='min-size'"):
        gs.SearchSettings(objective="min-size", p_min=0.9, pick="one-se")


def test_records_table_without_the_se_column_reads_it_as_nan(tmp_path):
    import pandas as pd

    from graftsearch.optimize._runfiles import read_records

    frame = pd.DataFrame([_front_row(*r) for r in ONE_SE_FRONT]).drop(columns="val_accuracy_se")
    frame.to_csv(tmp_path / "pareto.csv", index=False)  # a run from before the column
    got = read_records(tmp_path / "pareto.csv")
    assert list(got.columns).index("val_accuracy_se") == list(got.columns).index("val_loss") + 1
    assert got["val_accuracy_se"].isna().all()


def test_metrics_json_of_an_earlier_version_keeps_the_picks_accuracy():
    from graftsearch.graft._record import SearchPick, _from

    old = {"proxy_val_accuracy": 0.91, "objective": "min-size", "candidates": []}
    pick = _from(SearchPick, old)
    assert pick.search_val_accuracy == 0.91 and pick.search_source == "proxy val"
    assert _from(SearchPick, {"search_val_accuracy": 0.9, "search_source": "refined val"}
                 ).search_source == "refined val"


def test_one_se_summary_says_which_pick_it_is():
    from graftsearch.optimize._result import summary_message

    records = [Record(**{k: v for k, v in _front_row(*r).items()
                         if k not in ("taps", "n_taps", "deepest_tap")}) for r in ONE_SE_FRONT]
    settings = gs.SearchSettings(objective="max-accuracy", size_max="1M", pick="one-se")
    message = summary_message(settings, feasible_front(records, settings), True, evaluations=4,
                              generations=1, stopped_by="generations")
    assert message.startswith("The smallest selection within 1,000,000 params and within one "
                              "standard error of the most accurate one's proxy val accuracy: taps 2 ")
