"""Trains a derived architecture with the evaluation recipe and saves it as `.keras`.

    python apps/train.py --architecture=runs/demo/architecture.json --dataset=digits --epochs=5 \
        --output=runs/demo/model.keras

`--architecture` is an architecture JSON file or a preset name (`darts_v2`, ...).
`--config` reads a JSON file of the same keys (see configs/train_*.json); a flag
given on the command line wins over the config.

The recipe is the paper's PyTorch loop: the global gradient norm clipped at
`--clipnorm`, then SGD with momentum and coupled L2 weight decay
(`unas_keras.optimizers.SGD`), linear warm-up then cosine decay.

Long runs: the run folder (`--run_dir`, default `<output without .keras>_run/`)
holds `run.json` (the effective settings), `backup/` (the whole training state,
replaced atomically at each epoch end), `logs/` (TensorBoard) and `best.json`.
Rerunning the same command after an interruption (even `kill -9`) resumes from
the last finished epoch and ends with the same model as an uninterrupted run
(exactly on the CPU with `--deterministic`). Written at the end (atomically):
`--output` (the last model), `<output stem>.best.keras` (best validation
accuracy) and, beside each, `<model>.json`: the data set, input and outputs the
model was trained with (apps/export_tflite.py calibrates int8 on that data set).
`--strategy=mirrored` trains on every local GPU, or on the CPU split into
`--cpu_replicas` devices.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402

from unas_keras import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("architecture", None, "Architecture JSON file or preset name.")
flags.DEFINE_string("dataset", "digits", "digits, a tensorflow-datasets name, or a folder of class folders.")
flags.DEFINE_string("output", None, "Where to write the trained model (.keras).")
flags.DEFINE_string("config", None, "JSON file with the training recipe (flags override it).")
flags.DEFINE_integer("epochs", 5, "Training epochs.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("resolution", None, "Input side (default: the search's, else the dataset's; digits 32).")
flags.DEFINE_integer("init_channels", None, "DARTS: initial channels C (default 36).")
flags.DEFINE_integer("num_cells", None, "DARTS: number of cells (default 20).")
flags.DEFINE_boolean("auxiliary", None, "DARTS: auxiliary head after the 2/3-depth cell.")
flags.DEFINE_float("drop_path_rate", None, "DARTS: final drop-path rate (ramped linearly from 0).")
flags.DEFINE_float("width_multiplier", None, "Proxyless: width multiplier (default 1.0).")
flags.DEFINE_float("dropout_rate", None, "Proxyless: dropout before the classifier.")
flags.DEFINE_float("learning_rate", 0.05, "Peak SGD learning rate.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 3e-4, "Coupled L2 weight decay (added to the gradient before the momentum, "
                   "as PyTorch's SGD weight_decay).")
flags.DEFINE_integer("warmup_epochs", 0, "Linear learning-rate warm-up epochs before the cosine decay.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
flags.DEFINE_float("auxiliary_weight", 0.4, "Weight of the auxiliary head's loss.")
flags.DEFINE_float("clipnorm", 5.0, "Clip of the global norm of all the weights' gradients together.")
flags.DEFINE_integer("cutout", 0, "Cutout side (16 on CIFAR in the paper; 0 = off).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory (prepared datasets).")
flags.DEFINE_integer("steps_per_epoch", None, "Cap on the optimizer steps of an epoch (quick runs).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored"],
                  "Distribution strategy: default (one device) or mirrored (every local GPU, or the CPU split "
                  "into --cpu_replicas devices).")
flags.DEFINE_integer("cpu_replicas", None, "With --strategy=mirrored and no GPU: split the CPU into N devices.")
flags.DEFINE_string("run_dir", None, "Folder of the run's backup, logs and settings (default: "
                    "<output without .keras>_run).")
flags.DEFINE_boolean("deterministic", False, "Turn on TensorFlow op determinism (bit-exact resume on the CPU; "
                     "slower, and some GPU ops have no deterministic kernel).")

_RECIPE_KEYS = ("dataset", "epochs", "batch_size", "resolution", "init_channels", "num_cells", "auxiliary",
                "drop_path_rate", "width_multiplier", "dropout_rate", "learning_rate", "momentum",
                "weight_decay", "warmup_epochs", "label_smoothing", "auxiliary_weight", "clipnorm", "cutout",
                "seed", "data_dir", "steps_per_epoch")

def _load_architecture(spec):
    from unas_keras.space import Architecture, presets

    if spec is None:
        raise cli.UsageError("--architecture is required (a JSON file or a preset name).")
    if not os.path.exists(spec) and spec in presets.names():
        return presets.get(spec)
    if not os.path.exists(spec):
        raise cli.UsageError(f"--architecture {spec}: no such file, and not a preset "
                             f"({', '.join(presets.names())}).")
    return Architecture.load(spec)


def _default_resolution(architecture_path, dataset, data_dir=None):
    """The search's input side (from run.json beside the architecture), else a dataset default."""
    run_json = os.path.join(os.path.dirname(os.path.abspath(architecture_path or ".")), "run.json")
    if architecture_path and os.path.exists(run_json):
        try:
            with open(run_json, encoding="utf-8") as f:
                run = json.load(f)
            for key in ("image_size", "resolution"):
                value = run.get(key) or run.get("config", {}).get(key)
                if value:
                    return int(value)
        except (OSError, ValueError, AttributeError):
            pass
    if dataset == "digits":
        return 32
    from unas_keras import data

    shape = data.dataset_info(dataset, data_dir).image_shape
    if shape and shape[0]:
        return int(shape[0])
    raise cli.UsageError(f"cannot tell the image size of {dataset!r}; pass --resolution.")


def _check_run_dir(run_dir, settings):
    """Refuses a run folder that holds a run with other settings; writes run.json for a new one."""
    from unas_keras import _atomic

    path = os.path.join(run_dir, "run.json")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                previous = json.load(f)
        except (OSError, ValueError):
            raise cli.UsageError(f"{path} is unreadable; remove {run_dir} to start over.") from None
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise cli.UsageError(f"{run_dir} holds a training run with other settings ({', '.join(changed)}); "
                                 f"use another --output or --run_dir, or remove {run_dir}.")
        return True
    _atomic.write_text_atomic(path, json.dumps(settings, indent=2) + "\n")
    return False


def _training_stream(data, options, resolution, start_step, data_steps):
    """The training batches from global step `start_step` on (epoch e of the data depends on (seed, e) only)."""
    epoch, skip = divmod(start_step, data_steps)
    train_ds, _, _ = data.eval_data(options["dataset"], image_size=resolution, batch_size=options["batch_size"],
                                    seed=options["seed"], cutout=options["cutout"], start_epoch=epoch,
                                    data_dir=options["data_dir"])
    return train_ds.skip(skip) if skip else train_ds


def _metadata(architecture, options, resolution, info, model, num_steps, result):
    dataset = options["dataset"]
    if isinstance(dataset, str) and os.path.isdir(dataset):
        dataset = os.path.abspath(dataset)
    return {
        "format": "unas_keras.trained_model/1",
        "architecture": json.loads(architecture.to_json()),
        "dataset": dataset,
        "data_dir": options["data_dir"],
        "num_classes": int(info.num_classes),
        "input_shape": [int(d) for d in info.input_shape],
        "outputs": [t.name.split("/")[0] for t in model.outputs],
        "inference_output": 0,
        "training_only_outputs": list(range(1, len(model.outputs))),
        "recipe": {k: v for k, v in options.items() if k not in ("dataset", "data_dir")},
        "resolution": resolution,
        "optimizer_steps": num_steps,
        "result": result,
    }


def _train(architecture, options, resolution, val_ds, info, steps, strategy, run_dir, output, resuming):
    """Trains and scores the derived network (`unas_keras.scoring`), resuming from the run's backup."""
    import keras

    from unas_keras import data, scoring, training
    from unas_keras.space import registry as space_registry

    spec = space_registry.get(architecture.space)
    network_options = {k: options[k] for k in spec.network_options if options.get(k) is not None}
    backup = training.TrainingBackup(os.path.join(run_dir, "backup"), steps)
    if not resuming and os.path.exists(backup.path):
        os.remove(backup.path)  # left by a run whose run.json was removed: this is a new run
    callbacks = [training.BestModelCheckpoint(_best_path(output), os.path.join(run_dir, "best.json")),
                 keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "logs"), write_graph=False)]

    def training_stream(epoch):
        return _training_stream(data, options, resolution, epoch * steps, info.steps_per_epoch)

    def announce(model, initial_epoch):
        if initial_epoch:
            print(f"Resuming from the end of epoch {initial_epoch} ({run_dir}).")
        print(f"Training {architecture.name or architecture.space} on {info.name}: "
              f"{model.count_params():,} parameters, input {info.input_shape}, {options['epochs']} epochs of "
              f"{steps} steps, {strategy.num_replicas_in_sync} replica(s).", flush=True)

    # The backup is written after the best model (scoring puts it last): a kill between the two redoes the
    # epoch, never skips its best model.
    return scoring.score_architecture(
        architecture, training_stream, val_ds, num_classes=info.num_classes, input_shape=info.input_shape,
        steps_per_epoch=steps, recipe=training.Recipe.from_options(options), network_options=network_options,
        seed=options["seed"], strategy=strategy, callbacks=callbacks, backup=backup, on_start=announce,
        validate_each_epoch=True, verbose=2)


def _best_path(output):
    return output[: -len(".keras")] + ".best.keras"


def main(argv):
    del argv
    options = cli.merged_options(FLAGS, _RECIPE_KEYS, cli.load_config(FLAGS.config))
    if not FLAGS.output:
        raise cli.UsageError("--output is required (a path ending in .keras).")
    if not FLAGS.output.endswith(".keras"):
        raise cli.UsageError(f"--output must end in .keras, got {FLAGS.output}.")
    architecture = _load_architecture(FLAGS.architecture)
    for name in ("epochs", "batch_size"):
        if options[name] < 1:
            raise cli.UsageError(f"--{name} must be >= 1, got {options[name]}.")
    if options["steps_per_epoch"] is not None and options["steps_per_epoch"] < 1:
        raise cli.UsageError(f"--steps_per_epoch must be >= 1, got {options['steps_per_epoch']}.")
    if FLAGS.cpu_replicas is not None and FLAGS.strategy != "mirrored":
        raise cli.UsageError("--cpu_replicas needs --strategy=mirrored.")
    output = os.path.abspath(FLAGS.output)
    run_dir = os.path.abspath(FLAGS.run_dir or output[: -len(".keras")] + "_run")

    from unas_keras.search import distributed

    # The strategy first: it configures the devices before anything else runs on TensorFlow.
    strategy = distributed.make_strategy(FLAGS.strategy, cpu_replicas=FLAGS.cpu_replicas)
    if options["batch_size"] % strategy.num_replicas_in_sync:
        raise cli.UsageError(f"--batch_size {options['batch_size']} must be divisible by the number of replicas "
                             f"({strategy.num_replicas_in_sync}).")

    import keras
    import tensorflow as tf

    from unas_keras import data, training

    keras.utils.set_random_seed(options["seed"])
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    resolution = options["resolution"] or _default_resolution(FLAGS.architecture, options["dataset"],
                                                              options["data_dir"])
    _, val_ds, info = data.eval_data(options["dataset"], image_size=resolution, batch_size=options["batch_size"],
                                     seed=options["seed"], cutout=options["cutout"], start_epoch=0,
                                     data_dir=options["data_dir"])
    steps = min(options["steps_per_epoch"] or info.steps_per_epoch, info.steps_per_epoch)
    settings = {"architecture": json.loads(architecture.to_json()), "options": options, "resolution": resolution,
                "steps_per_epoch": steps, "num_replicas": strategy.num_replicas_in_sync}
    resuming = _check_run_dir(run_dir, settings)

    score = _train(architecture, options, resolution, val_ds, info, steps, strategy, run_dir, output, resuming)
    model = score.model
    accuracy = score.metrics["val_accuracy"]
    result = {"validation_accuracy": accuracy, "validation_loss": score.metrics["val_loss"],
              "params": score.metrics["params"], "macs": score.metrics.get("macs")}
    training.save_model_atomic(model, output)
    training.write_metadata(output, _metadata(architecture, options, resolution, info, model,
                                              options["epochs"] * steps, result))
    best_path = _best_path(output)
    if os.path.exists(best_path):
        with open(os.path.join(run_dir, "best.json"), encoding="utf-8") as f:
            best = json.load(f)
        training.write_metadata(best_path, _metadata(architecture, options, resolution, info, model,
                                                     best["epoch"] * steps, {"validation_accuracy": best["value"]}))
    shown = "n/a" if accuracy is None else f"{accuracy:.4f}"
    print(f"Saved {output} (validation accuracy {shown}).")


if __name__ == "__main__":
    cli.run_app(main)
