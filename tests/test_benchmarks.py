"""The paper-table and entropy benchmarks keep working: the whole pipeline on a tiny setting, real processes, real
NeMo models and .nemo files. (What they measure is reported by the benchmarks; nothing here asserts a timing.)"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from helpers.factories import benchmark_module

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = [
    "student_only",
    "teacher_only",
    "tandem_implicit",
    "codert",
    "static_teacher",
    "static_teacher_kd0",
    "codert_own_decoder",
    "codert_lattice",
    "static_teacher_lattice",
    "offline_teacher",
]
PAIRED = ("student_only", "teacher_only", "codert")  # systems the tiny table trains with both seeds
TINY = [
    "--quick",
    "--hours",
    "0.01",
    "--dev-hours",
    "0.003",
    "--test-hours",
    "0.003",
    "--steps",
    "2",
    "--val-every",
    "1",
    "--time-steps",
    "1",
    "--seeds",
    "0",
    "1",
    # Two seeds where the paired ratios need them, one for the rest: the budget option the full table offers too.
    "--single-seed",
    *SYSTEMS[2:3],
    *SYSTEMS[4:],
    "--set",
    "model.encoder.n_layers=1",
    "--set",
    "model.encoder.d_model=48",
    "--set",
    "model.encoder.n_heads=2",
    "--set",
    "model.encoder.subsampling_conv_channels=16",
    "--set",
    "model.student_encoder.n_layers=1",
    "--set",
    "model.student_encoder.d_model=24",
    "--set",
    "model.student_encoder.n_heads=2",
    "--set",
    "model.student_encoder.subsampling_conv_channels=8",
    "--set",
    "model.model_defaults.pred_hidden=32",
    "--set",
    "model.model_defaults.joint_hidden=32",
]


def _run(args, cwd=REPO):
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def paper_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_table")
    args = [
        "benchmarks/paper_table.py",
        *TINY,
        "--work-dir",
        str(root / "work"),
        "--results-dir",
        str(root / "results"),
    ]
    first = _run(args)
    return root, args, first


@pytest.mark.slow
def test_paper_table_quick_pipeline(paper_table):
    root, args, _ = paper_table
    results = root / "results"
    report = (results / "paper_table.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ") and "---" not in line][1:11]
    assert len(table) == 10 and "| 1 student alone (baseline) |" in table[0]
    assert (results / "paper_table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "- command: `python benchmarks/paper_table.py --quick" in report and "- machine: " in report

    data = json.loads((results / "paper_table.json").read_text())
    rows = data["rows"]
    assert list(rows) == SYSTEMS
    for name in SYSTEMS:
        assert set(rows[name]["test_wer"]) == ({"0", "1"} if name in PAIRED else {"0"})  # every run scored
        assert rows[name]["step_seconds"] > 0 and rows[name]["peak_rss"] > 0
    # Every system deploys the same student, except system 2, which is the teacher architecture.
    student_params = {rows[n]["params"] for n in SYSTEMS if n != "teacher_only"}
    assert len(student_params) == 1 and rows["teacher_only"]["params"] > student_params.pop()
    # The relative reduction is paired by seed against system 1.
    for seed in ("0", "1"):
        base, codert = rows["student_only"]["test_wer"][seed], rows["codert"]["test_wer"][seed]
        assert rows["codert"]["rel_reduction"][seed] == pytest.approx((base - codert) / base)
    # Teachers trained in tandem are scored; static_teacher's teacher is system 2, not scored again.
    assert set(rows["codert"]["teacher_test_wer"]) == {"0", "1"} and not rows["static_teacher"]["teacher_test_wer"]
    # Dev WER over training is recorded for systems 1 and 4 at every validation.
    assert [p["step"] for p in rows["codert"]["dev_wer"]["0"]] == [1, 2]

    work = root / "work"
    with_teacher_file = ("static_teacher", "static_teacher_kd0", "static_teacher_lattice", "offline_teacher")
    for name in with_teacher_file:  # trained with seed 0 only (--single-seed)
        spec = json.loads((work / "train" / f"{name}-seed0.json").read_text())["spec"]
        assert spec["teacher_nemo"] == str(work / "runs" / "teacher_only-seed0" / "student.nemo")
    # System 9 learnt from a cache of that teacher, built once (8 logits a frame) and reused by its cost pass; the
    # cache's name carries the teacher run's key (a teacher trained otherwise gets a cache of its own).
    run = json.loads((work / "train" / "offline_teacher-seed0.json").read_text())
    cache, teacher_key = run["teacher_cache"], run["spec"]["teacher_key"]
    assert (
        cache["k"] == 8
        and cache["bytes"] > 0
        and cache["dir"] == str(work / "teacher_cache" / f"teacher_only-seed0-k8-{teacher_key[:8]}")
    )
    assert (
        json.loads((work / "time" / "offline_teacher-seed0.json").read_text())["teacher_cache"]["dir"] == cache["dir"]
    )
    # The exported students are stock NeMo models (hybrid RNN-T/CTC: codert_small ships the aux_ctc heads).
    from nemo_codert.export import HYBRID_TARGET, read_nemo_config

    for name in SYSTEMS:
        assert read_nemo_config(work / "runs" / f"{name}-seed0" / "student.nemo").target == HYBRID_TARGET


@pytest.mark.slow
def test_paper_table_rerun_reuses_finished_work(paper_table):
    root, args, _ = paper_table
    out = _run(args)
    assert "13 of 13 already done (reused)" in out and "10 of 10 already done (reused)" in out
    assert "started " not in out and "evaluated " not in out


@pytest.mark.slow
def test_a_table_over_chosen_systems_and_seeds_reuses_the_full_tables_runs(paper_table, tmp_path):
    root, args, _ = paper_table
    assert args[-2] == "--results-dir"
    out = _run([*args[:-1], str(tmp_path), "--systems", "student_only", "teacher_only", "codert", "--seeds", "0"])
    assert out.count("3 of 3 already done (reused)") == 2  # training and timing runs
    assert "started " not in out and "evaluated " not in out
    data = json.loads((tmp_path / "paper_table.json").read_text())
    assert list(data["rows"]) == ["student_only", "teacher_only", "codert"]
    full = json.loads((root / "results" / "paper_table.json").read_text())
    assert data["rows"]["codert"]["test_wer"] == {"0": full["rows"]["codert"]["test_wer"]["0"]}


@pytest.mark.slow
def test_multi_student_benchmark_scores_each_student_of_a_ladder_against_its_own_run(paper_table, tmp_path):
    root, args, _ = paper_table
    assert args[-4] == "--work-dir"
    out = _run(["benchmarks/multi_student.py", *args[1:-2], "--seeds", "0", "--results-dir", str(tmp_path)])
    assert "3 of 5 already done (reused)" in out  # the table's 1, 2 and 4: only 4m and 4l train
    data = json.loads((tmp_path / "multi_student.json").read_text())
    rows = {(r["system"], r["side"]): r for r in data["rows"]}
    small, medium = rows[("codert", "student")], rows[("codert_medium", "student")]
    ladder_small, ladder_medium = rows[("codert_ladder", "student")], rows[("codert_ladder", "student:medium")]
    # Each ladder student is the same architecture as its own single-student run, and is compared with it.
    assert ladder_small["params"] == small["params"] < medium["params"] == ladder_medium["params"]
    for row in (ladder_small, ladder_medium):
        assert set(row["seeds"]) == {"0"} and 0 <= row["test_wer"][0] and "vs_alone" in row
    assert all(c["step_seconds"] > 0 and c["peak_rss"] > 0 for c in data["cost"].values())
    assert "| medium student, in the ladder (4l) |" in (tmp_path / "multi_student.md").read_text()
    ladder_run = json.loads((root / "work" / "train" / "codert_ladder-seed0.json").read_text())
    assert ladder_run["primary_student"] == "small" and set(ladder_run["students_nemo"]) == {"medium"}


@pytest.mark.slow
def test_streaming_benchmark_trains_a_streaming_student_alone_and_distilled(tmp_path):
    from nemo_codert.nemo_file import read_nemo_config

    _run(["benchmarks/streaming.py", *TINY, "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path)])
    data = json.loads((tmp_path / "streaming.json").read_text())
    assert data["settings"]["config"] == "codert_streaming"
    assert [r["system"] for r in data["rows"]] == ["student_only", "teacher_only", "codert", "codert_shift0"]
    assert data["latency"] == {"chunk_ms": 160.0, "lookahead_ms": 120.0, "left_context_ms": 1920.0}
    runs = tmp_path / "work" / "runs"
    # 1 and 4 deploy the cache-aware student; 2 is the full-context teacher; 4 pairs frames with the config's shift of
    # 2, 4z one to one.
    for name in ("student_only", "codert", "codert_shift0"):
        encoder = read_nemo_config(runs / f"{name}-seed0" / "student.nemo").encoder
        assert encoder.att_context_style == "chunked_limited" and list(encoder.att_context_size) == [48, 3]
    assert list(read_nemo_config(runs / "teacher_only-seed0" / "student.nemo").encoder.att_context_size) == [-1, -1]
    assert read_nemo_config(runs / "codert-seed0" / "model.nemo").codert.kd_frame_shift == 2
    assert read_nemo_config(runs / "codert_shift0-seed0" / "model.nemo").codert.kd_frame_shift == 0
    report = (tmp_path / "streaming.md").read_text()
    assert "| 4z CoDERT, kd_frame_shift 0 |" in report and "chunks of 160 ms" in report


def test_paper_table_rejects_inconsistent_settings(capsys):
    module = benchmark_module("paper_table")
    with pytest.raises(SystemExit):
        module.parse_args(["--steps", "10", "--val-every", "3"])
    assert "multiple of --val-every" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.parse_args(["--systems", "student_only", "codert"])
    assert "--systems must include teacher_only" in capsys.readouterr().err


def test_viterbi_path_is_the_best_alignment():
    viterbi_path = benchmark_module("entropy").viterbi_path
    rng = np.random.default_rng(0)
    T, U, V1, blank = 4, 2, 5, 4
    logits = rng.normal(size=(T, U + 1, V1)) * 3
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = [1, 3]

    def score(nodes):
        total = 0.0
        for (t, u), nxt in zip(nodes, nodes[1:] + [None]):
            label = nxt is not None and nxt[0] == t
            total += log_probs[t, u, targets[u] if label else blank]
        return total

    # Every alignment: choose which of the T+U emissions are labels.
    best = -math.inf
    for label_slots in itertools.combinations(range(T + U - 1), U):  # the last emission is always a blank
        t = u = 0
        nodes = []
        for i in range(T + U):
            nodes.append((t, u))
            if i in label_slots:
                u += 1
            else:
                t += 1
        if t == T and u == U:
            best = max(best, score(nodes))
    path = viterbi_path(log_probs, targets, blank)
    assert len(path) == T + U and path[0] == (0, 0) and path[-1] == (T - 1, U)
    assert score(path) == pytest.approx(best)


@pytest.mark.slow
def test_entropy_script_on_a_real_codert_model(paper_table, tmp_path):
    root, *_ = paper_table
    model = root / "work" / "runs" / "codert-seed0" / "model.nemo"
    manifest = next((root / "work").glob("corpus-*")) / "test_manifest.json"
    out = tmp_path / "entropy"
    _run(["benchmarks/entropy.py", str(model), str(manifest), "--out-dir", str(out)])
    data = json.loads((out / "entropy.json").read_text())
    assert set(data["sides"]) == {"teacher", "student"}
    utterances = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert data["utterances"] == len(utterances)
    h_max = math.log(data["classes"])
    for side in data["sides"].values():
        for key in ("encoder", "path", "path_blank", "path_label"):
            d = side[key]
            assert d["n"] > 0 and 0 <= d["min"] <= d["mean"] <= d["max"] <= h_max + 1e-4
            assert sum(d["histogram"]) == d["n"]
        # T+U path nodes per utterance: one blank per encoder frame plus one node per reference token.
        assert side["path_blank"]["n"] == side["encoder"]["n"]
        assert side["path"]["n"] == side["path_blank"]["n"] + side["path_label"]["n"]
    assert (out / "entropy.png").read_bytes()[:4] == b"\x89PNG"
    assert "| teacher |" in (out / "entropy.md").read_text()


def test_codert_systems_train_with_the_configs_lambda_and_a_new_default_retrains_them(tmp_path, monkeypatch):
    """The table measures the recipe users get: the KD systems take lambda from the config (a fixed lambda of the
    table's own once made it measure lambda=1 while the shipped default was 0.1), and a run's spec records a digest
    of its whole config, so a new default (lambda, regularisation, ...) cannot reuse runs trained with the old one."""
    from omegaconf import OmegaConf

    pt = benchmark_module("paper_table")
    shipped = OmegaConf.load(REPO / "conf" / "codert_small.yaml").model.codert.kd_weight
    settings = pt.PRESETS["quick"]
    for name in ("codert", "static_teacher", "codert_own_decoder", "codert_lattice", "static_teacher_lattice"):
        cfg = pt.system_config(settings, pt.BY_NAME[name], 0, tmp_path, None)
        assert cfg.model.codert.kd_weight == shipped, name
        assert cfg.model.codert.kd_target == ("joint_lattice" if "lattice" in name else "encoder_logits"), name
    for name in ("tandem_implicit", "static_teacher_kd0"):
        assert pt.system_config(settings, pt.BY_NAME[name], 0, tmp_path, None).model.codert.kd_weight == 0.0

    # System 5's teacher trained to its own budget is a run like the others: a new default retrains it too.
    with_source = replace(settings, static_teacher_steps=7, systems=["student_only", "codert", "static_teacher"])

    def key(system):
        jobs = pt.plan_jobs(with_source, tmp_path, tmp_path, "train")
        if system == "teacher_source":
            return pt._spec_key(next(j for j in jobs if j.spec["run_dir"].endswith("teacher_source-steps7")).spec)
        return pt._spec_key(next(j for j in jobs if j.spec["system"] == system).spec)

    before = {system: key(system) for system in ("codert", "student_only", "teacher_source")}
    assert {system: key(system) for system in before} == before  # stable: an unchanged run is reused
    stock_compose = pt.compose
    # Which runs each new default retrains: lambda CoDERT's alone, the student's dropout the student's runs (not the
    # teacher trained alone, whose config puts the teacher encoder in the student's place), the teacher encoder's
    # dropout every run (the digest is of the whole composed config: the student alone's carries the unused teacher
    # section; conservative).
    retrained_by = {
        "codert.kd_weight": {"codert"},
        "student_encoder.dropout": {"codert", "student_only"},
        "encoder.dropout": {"codert", "student_only", "teacher_source"},
    }
    for field, value in (("codert.kd_weight", 0.7), ("student_encoder.dropout", 0.2), ("encoder.dropout", 0.3)):
        # A new default in conf/codert_small.yaml, the table's own settings unchanged.
        def new_default(config, overrides=(), field=field, value=value):
            cfg = stock_compose(config, overrides)
            OmegaConf.update(cfg, f"model.{field}", value)
            return cfg

        monkeypatch.setattr(pt, "compose", new_default)
        for system in before:
            assert (key(system) != before[system]) == (system in retrained_by[field]), (system, field)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"mode": "static_teacher", "warm_teacher": True}, "warm_teacher is a tandem run's"),
        ({"teacher_head_start": 0.25}, "need warm_teacher"),
        ({"same_budget_teacher": True}, "need warm_teacher"),
        ({"warm_teacher": True, "teacher_head_start": 1.0}, r"teacher_head_start 1.0 is not in \[0, 1\)"),
        ({"teacher_lead": 1.5}, r"teacher_lead 1.5 is not in \[0, 1\)"),
        ({"warm_teacher": True, "teacher_lead": 0.25}, "teacher_lead is a tandem run's own head start"),
        ({"mode": "static_teacher", "teacher_lead": 0.25}, "teacher_lead is a tandem run's own head start"),
    ],
)
def test_a_system_whose_teacher_fields_do_not_pair_is_refused(fields, message):
    """plan_jobs reads the head start and the same-budget teacher only for a warm tandem teacher: a system that set
    them alone would train another recipe than its label names, with no error."""
    pt = benchmark_module("paper_table")
    with pytest.raises(ValueError, match=f"System x: .*{message}"):
        pt.System("x", "x", **{"mode": "tandem", **fields})


def test_the_tables_codert_leads_as_shipped_for_a_quarter_of_its_steps_and_4s_and_the_baselines_do_not(tmp_path):
    """System 4 is CoDERT as codert_small ships it: the lead plus the table's steps (trainer.max_steps are the
    students'), so its student gets the baseline's budget; 3 (its lambda=0 ablation) leads too, 4s and the
    baselines do not, and a short table's lead is a quarter of its steps, not the config's 450."""
    pt = benchmark_module("paper_table")
    settings = replace(pt.PRESETS["quick"], steps=1800)
    for system in ("codert", "tandem_implicit"):
        cfg = pt.system_config(settings, pt.BY_NAME[system], 0, tmp_path, None)
        assert cfg.model.codert.teacher_lead_steps == 450 and cfg.trainer.max_steps == 1800, system
        assert cfg.model.codert.mode == "tandem" and cfg.model.codert.teacher_nemo is None
    short = pt.system_config(replace(settings, steps=40), pt.BY_NAME["codert"], 0, tmp_path, None)
    assert short.model.codert.teacher_lead_steps == 10
    assert pt.compose("codert_small").model.codert.teacher_lead_steps == 450
    for system in ("codert_scratch", "student_only"):
        assert pt.system_config(settings, pt.BY_NAME[system], 0, tmp_path, None).model.codert.teacher_lead_steps == 0
    # ... unless the table sets one for every system (--set), as it may set any key.
    led = replace(settings, overrides=["model.codert.teacher_lead_steps=100"])
    assert (
        pt.system_config(led, pt.BY_NAME["codert_scratch"], 0, tmp_path, None).model.codert.teacher_lead_steps == 100
    )


def test_a_student_of_a_teacher_with_its_own_budget_closes_the_gap_to_that_teacher(tmp_path):
    """The gap-closed column measures a student against the teacher it learnt from: with --static-teacher-steps that
    is the longer-trained teacher, not system 2 (against which a stronger teacher's student would close more than the
    whole gap). A two-phase CoDERT starts from system 2 of its own seed (4p) or from a head start of its own, system 2
    trained for a quarter of the steps (4q); the gap of both is to system 2."""
    pt = benchmark_module("paper_table")
    settings = replace(
        pt.PRESETS["quick"],
        seeds=[0],
        static_teacher_steps=7,
        systems=[
            "student_only",
            "teacher_only",
            "codert",
            "static_teacher",
            "codert_warm",
            "codert_two_phase",
            "codert_head_start",
        ],
    )
    jobs = pt.plan_jobs(settings, tmp_path, tmp_path, "train")
    source = next(j for j in jobs if "teacher_source" in j.result.stem)
    system_2 = next(j for j in jobs if j.result.stem == "teacher_only-seed0")
    head = next(j for j in jobs if j.result.stem == "teacher_only_s10-seed0")  # 2 for a quarter of the 40 steps
    assert (head.spec["system"], head.spec["settings"]["steps"], head.needs) == ("teacher_only", 10, None)
    assert jobs.index(head) < jobs.index(next(j for j in jobs if j.spec["system"] == "codert_head_start"))
    # The frozen teacher and the warm start are that teacher's file, wait for it, and carry its run's key: a teacher
    # trained with other settings (same file name) makes its students other runs, not reused ones.
    for job in jobs:
        if job.spec["system"] in ("static_teacher", "codert_warm"):
            assert job.spec["teacher_nemo"] == str(Path(source.spec["run_dir"]) / "student.nemo")
            assert job.needs == source.result and job.spec["teacher_key"] == pt._spec_key(source.spec)
        if job.spec["system"] == "codert_two_phase":
            assert job.spec["teacher_nemo"] == str(Path(system_2.spec["run_dir"]) / "student.nemo")
            assert job.needs == system_2.result and job.spec["teacher_key"] == pt._spec_key(system_2.spec)
        if job.spec["system"] == "codert_head_start":
            assert job.spec["teacher_nemo"] == str(Path(head.spec["run_dir"]) / "student.nemo")
            assert job.needs == head.result and job.spec["teacher_key"] == pt._spec_key(head.spec)
    wers = {
        "teacher_source": 0.30,
        "student_only": 0.50,
        "teacher_only": 0.45,
        "codert": 0.48,
        "static_teacher": 0.40,
        "codert_warm": 0.42,
        "codert_two_phase": 0.43,
        "codert_head_start": 0.41,
    }
    scores = {}
    for job in jobs:
        job.result.parent.mkdir(parents=True, exist_ok=True)
        job.result.write_text(json.dumps({"dev_wer": [], "train_seconds": 1.0}))
        system = "teacher_source" if "teacher_source" in job.result.stem else job.spec["system"]
        scores[job.result.stem] = {"student": {"wer": wers[system], "cer": 0.1, "params": 1, "rtf": 0.01}}
    corpus = pt.benchmark_corpus_dir(tmp_path, settings)
    corpus.mkdir(parents=True)
    (corpus / "corpus.json").write_text("{}")
    rows = pt.summarise(settings, jobs, [], scores, tmp_path)["rows"]
    assert rows["codert"]["gap_closed"] == pytest.approx((0.50 - 0.48) / (0.50 - 0.45))  # to system 2
    assert rows["static_teacher"]["gap_closed"] == pytest.approx((0.50 - 0.40) / (0.50 - 0.30))  # to its teacher
    assert rows["codert_warm"]["gap_closed"] == pytest.approx((0.50 - 0.42) / (0.50 - 0.30))
    assert rows["codert_two_phase"]["gap_closed"] == pytest.approx((0.50 - 0.43) / (0.50 - 0.45))
    assert rows["codert_head_start"]["gap_closed"] == pytest.approx((0.50 - 0.41) / (0.50 - 0.45))


@pytest.mark.parametrize("teacher_wer, closed", [(0.40, (0.50 - 0.45) / (0.50 - 0.40)), (0.49, None)])
def test_gap_closed_is_over_the_seeds_a_row_shares_and_none_within_the_noise(tmp_path, teacher_wer, closed):
    """System 2 with seed 0 only: the gap is seed 0's, not three seeds' mean against one; a gap within the
    baseline's seed-to-seed sd (0.02 here) gives no share (its ratio is noise). One seed prints no spread."""
    pt = benchmark_module("paper_table")
    settings = replace(
        pt.PRESETS["quick"],
        seeds=[0, 1, 2],
        single_seed=["teacher_only"],
        systems=["student_only", "teacher_only", "codert"],
    )
    jobs = pt.plan_jobs(settings, tmp_path, tmp_path, "train")
    wers = {"student_only": [0.50, 0.46, 0.48], "teacher_only": [teacher_wer], "codert": [0.45, 0.44, 0.43]}
    scores = {}
    for job in jobs:
        job.result.parent.mkdir(parents=True, exist_ok=True)
        commit = {"commit": "abc1234"} if job.spec["system"] == "codert" else {}  # the others: from before commits
        job.result.write_text(json.dumps({"dev_wer": [], "train_seconds": 1.0, **commit}))
        wer = wers[job.spec["system"]][job.spec["seed"]]
        scores[job.result.stem] = {"student": {"wer": wer, "cer": 0.1, "params": 1, "rtf": 0.01}}
    corpus = pt.benchmark_corpus_dir(tmp_path, settings)
    corpus.mkdir(parents=True)
    (corpus / "corpus.json").write_text("{}")
    rows = pt.summarise(settings, jobs, [], scores, tmp_path)["rows"]
    assert rows["codert"]["gap_closed"] == (None if closed is None else pytest.approx(closed))
    # The report names the code each system's runs were trained at (runs are reused across commits).
    assert pt._systems_by_commit(rows) == {"not recorded": ["student_only", "teacher_only"], "abc1234": ["codert"]}
    assert pt.format_mean_sd([teacher_wer]) == f"{teacher_wer:.3f} (1 seed)"
    assert pt.format_mean_sd([0.05, 0.07], 100, "+.1f", " %") == "+6.0 % +- 1.4"


def test_the_cost_pass_times_a_lead_systems_tandem_steps(tmp_path):
    """A timing run is a few steps: the lead's 450 before them would be all of what it times (the teacher alone).
    Training keeps the lead."""
    pt = benchmark_module("paper_table")
    settings = replace(pt.PRESETS["quick"], steps=1800, systems=["student_only", "teacher_only", "codert"])
    for kind, lead in (("time", 0), ("train", 450)):
        job = next(j for j in pt.plan_jobs(settings, tmp_path, tmp_path, kind) if j.spec["system"] == "codert")
        assert pt.job_config(job.spec).model.codert.teacher_lead_steps == lead


def test_kd_sweep_of_the_static_mode_runs_every_point_from_the_given_teacher(tmp_path):
    import argparse

    kd = benchmark_module("kd_sweep")
    pt = benchmark_module("paper_table")
    teacher = str(tmp_path / "teacher.nemo")
    args = argparse.Namespace(lambdas=[0.1, 1.0], taus=[1.0], teacher_nemo=teacher)
    points = kd.plan(args, pt.PRESETS["quick"], tmp_path, tmp_path / "work")
    by_name = {}
    for p in points:
        by_name.setdefault(p["name"], []).append(p["job"].spec)
    assert set(by_name) == {"student_only", "static_teacher_kd0", "static_teacher-l0.1-t1", "static_teacher-l1-t1"}
    for name, specs in by_name.items():
        for spec in specs:
            assert spec["teacher_nemo"] == (None if name == "student_only" else teacher)
            assert spec.get("curve") is True or pt.BY_NAME[spec["system"]].curve  # every point is scored on dev
    assert by_name["static_teacher-l1-t1"][0]["overrides"] == [
        "model.codert.kd_weight=1.0",
        "model.codert.kd_temperature=1.0",
    ]
    # Without a teacher the sweep is the tandem one, as before.
    tandem = kd.plan(
        argparse.Namespace(lambdas=[0.1], taus=[1.0], teacher_nemo=None), pt.PRESETS["quick"], tmp_path, tmp_path
    )
    assert {p["name"] for p in tandem} == {"student_only", "tandem_implicit", "codert-l0.1-t1"}


def test_scale_check_runs_each_system_on_the_librispeech_path(tmp_path):
    """The full-size check (GPU, 200 steps) shrunk to a CPU smoke run: corpus -> LibriSpeech-shaped tree -> prepared
    data -> codert_fastconformer through lhotse, three systems, each in its own process, one report."""
    scale_check = benchmark_module("scale_check")
    argv = ["--shrink", "--steps", "4", "--hours", "0.02", "--batch-duration", "12", "--vocab-size", "64"]
    assert scale_check.main([*argv, "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "scale_check_cpu.json").read_text())
    rows = {r["system"]: r for r in summary["rows"]}
    assert list(rows) == ["tandem", "teacher_only", "student_only"]
    assert rows["tandem"]["parameters"] > rows["teacher_only"]["parameters"] > rows["student_only"]["parameters"]
    for row in rows.values():
        assert row["steps"] == 4 and row["step_seconds"] > 0 and row["peak_bytes"] > 0
        assert math.isfinite(row["loss_first_quarter"]) and math.isfinite(row["loss_last_quarter"])
    assert "| tandem |" in (tmp_path / "scale_check_cpu.md").read_text()
