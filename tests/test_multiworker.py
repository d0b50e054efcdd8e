"""Multi-worker search: two worker processes of a MultiWorkerMirroredStrategy on 127.0.0.1."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np
    from unas_keras.search import distributed
    strategy = distributed.make_strategy("multi_worker")   # from TF_CONFIG, before anything else
    from unas_keras.search.runner import search
    out, report = sys.argv[1], sys.argv[2]
    result = search(space="nb201", dataset="digits", epochs=2, warmup_epochs=0, batch_size=8,
                    steps_per_epoch=3, resolution=8, channels=4, cells_per_stage=1, seed=0,
                    output_dir=out, strategy=strategy, verbose=0)
    model = result.model
    # BatchNormalization moving statistics are excluded: Keras 3 creates them with aggregation "none",
    # so under tf.distribute every replica keeps its own running average of its own batches. The
    # search never reads them (the supernet's BN always normalises with batch statistics).
    digest = hashlib.sha256()
    per_variable = {}
    for i, v in enumerate(model.variables):
        if v.path.endswith(("moving_mean", "moving_variance")):
            continue
        data = np.ascontiguousarray(v.numpy()).tobytes()
        digest.update(data)
        per_variable[f"{i}:{v.path}"] = hashlib.sha256(data).hexdigest()[:12]
    for opt in (model.weight_optimizer, model.arch_optimizer):
        for v in opt.variables:
            data = np.ascontiguousarray(v.numpy()).tobytes()
            digest.update(data)
            per_variable[f"{opt.name}:{v.path}"] = hashlib.sha256(data).hexdigest()[:12]
    logits = {k: np.asarray(v.numpy()).tolist() for k, v in model.distribution.logit_variables.items()}
    with open(report, "w") as f:
        json.dump({"architecture": result.architecture.to_json(), "digest": digest.hexdigest(),
                   "logits": logits, "per_variable": per_variable, "step": int(model.search_step.numpy()),
                   "replicas": strategy.num_replicas_in_sync}, f)
""")


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_finish_with_identical_state(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "out"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                         "task": {"type": "worker", "index": index}}))
        log = open(tmp_path / f"worker{index}.log", "w")
        procs.append((subprocess.Popen([sys.executable, str(driver), str(out), str(tmp_path / f"r{index}.json")],
                                       env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        for proc, log in procs:
            proc.wait(timeout=600)
            log.close()
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    for index, (proc, _) in enumerate(procs):
        assert proc.returncode == 0, (tmp_path / f"worker{index}.log").read_text()[-3000:]

    reports = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2)]
    assert reports[0]["replicas"] == 2
    assert reports[0]["architecture"] == reports[1]["architecture"]
    assert reports[0]["logits"] == reports[1]["logits"]
    differing = [k for k, v in reports[0]["per_variable"].items() if reports[1]["per_variable"][k] != v]
    assert not differing, f"variables that differ between the workers: {differing[:10]}"
    assert reports[0]["digest"] == reports[1]["digest"], "weights, logits, counters, optimizer slots identical"
    assert any("search_step" in k for k in reports[0]["per_variable"])
    assert reports[0]["step"] == 6
    # The logits moved during the search step (the architecture was learned, not left at zero).
    assert any(abs(x) > 0 for rows in reports[0]["logits"].values() for row in rows for x in row)

    # Only the chief wrote results.
    for name in ("architecture.json", "distribution.json", "history.json", "run.json"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["num_replicas"] == 2 and run["num_workers"] == 2 and run["status"] == "finished"
    assert json.loads((out / "architecture.json").read_text()) == json.loads(reports[0]["architecture"])
    assert sorted(os.listdir(out)) == ["architecture.json", "architecture.png", "checkpoints", "distribution.json",
                                       "history.json", "logs", "probabilities.png", "probabilities_history.json",
                                       "run.json"]


@pytest.mark.slow
def test_mirrored_fit_and_custom_loop_agree(tmp_path):
    """Two local replicas: `model.fit` and the custom loop see the same global batches and seeds."""
    import tensorflow as tf

    from unas_keras.search.distributed import mirrored_strategy
    from unas_keras.search.runner import search

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (tests/conftest.py makes them)")
    kwargs = dict(space="nb201", dataset="digits", epochs=1, warmup_epochs=0, batch_size=8, steps_per_epoch=3,
                  resolution=8, channels=4, cells_per_stage=1, seed=0, verbose=0)
    strategy = mirrored_strategy(devices[:2])
    with_fit = search(output_dir=str(tmp_path / "fit"), strategy=strategy, **kwargs)
    custom = search(output_dir=str(tmp_path / "custom"), strategy=strategy, use_custom_loop=True, **kwargs)
    run = json.loads((tmp_path / "fit" / "run.json").read_text())
    assert run["num_replicas"] == 2
    for name in ("architecture.json", "distribution.json"):
        assert (tmp_path / "fit" / name).read_bytes() == (tmp_path / "custom" / name).read_bytes(), name
    assert with_fit.history["loss"] == pytest.approx(custom.history["loss"], rel=1e-5)
