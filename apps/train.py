"""Trains a derived architecture with the evaluation recipe and saves it as `.keras`.

    python apps/train.py --architecture=runs/demo/architecture.json --dataset=digits --epochs=5 \
        --output=runs/demo/model.keras

`--architecture` is an architecture JSON file or a preset name (`darts_v2`, ...).
`--config` reads a JSON file of the same keys (see configs/train_*.json); a flag
given on the command line wins over the config.
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
flags.DEFINE_float("weight_decay", 3e-4, "Weight decay.")
flags.DEFINE_integer("warmup_epochs", 0, "Linear learning-rate warm-up epochs before the cosine decay.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
flags.DEFINE_float("auxiliary_weight", 0.4, "Weight of the auxiliary head's loss.")
flags.DEFINE_float("clipnorm", 5.0, "Gradient-norm clipping.")
flags.DEFINE_integer("cutout", 0, "Cutout side (16 on CIFAR in the paper; 0 = off).")
flags.DEFINE_integer("seed", 0, "Random seed.")

_RECIPE_KEYS = ("dataset", "epochs", "batch_size", "resolution", "init_channels", "num_cells", "auxiliary",
                "drop_path_rate", "width_multiplier", "dropout_rate", "learning_rate", "momentum",
                "weight_decay", "warmup_epochs", "label_smoothing", "auxiliary_weight", "clipnorm", "cutout",
                "seed")
_NETWORK_OPTIONS = {
    "darts": ("init_channels", "num_cells", "auxiliary", "drop_path_rate"),
    "proxyless": ("width_multiplier", "dropout_rate"),
    "nb201": (),
}


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


def _default_resolution(architecture_path, dataset):
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

    shape = data.dataset_info(dataset).image_shape
    if shape and shape[0]:
        return int(shape[0])
    raise cli.UsageError(f"cannot tell the image size of {dataset!r}; pass --resolution.")


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

    from unas_keras import data, networks, training
    import keras

    keras.utils.set_random_seed(options["seed"])
    resolution = options["resolution"] or _default_resolution(FLAGS.architecture, options["dataset"])
    train_ds, val_ds, info = data.eval_data(options["dataset"], image_size=resolution,
                                            batch_size=options["batch_size"], seed=options["seed"],
                                            cutout=options["cutout"])
    network_options = {k: options[k] for k in _NETWORK_OPTIONS[architecture.space] if options[k] is not None}
    model = networks.build_model(architecture, info.num_classes, info.input_shape, **network_options)
    num_outputs = len(model.outputs)
    training.compile_for_training(
        model, steps_per_epoch=info.steps_per_epoch, epochs=options["epochs"],
        learning_rate=options["learning_rate"], momentum=options["momentum"],
        weight_decay=options["weight_decay"], warmup_epochs=options["warmup_epochs"],
        label_smoothing=options["label_smoothing"], auxiliary_weight=options["auxiliary_weight"],
        clipnorm=options["clipnorm"])
    callbacks = []
    if options.get("drop_path_rate"):
        callbacks.append(training.DropPathSchedule(options["drop_path_rate"], options["epochs"]))
    print(f"Training {architecture.name or architecture.space} on {info.name}: "
          f"{model.count_params():,} parameters, input {info.input_shape}, {options['epochs']} epochs.")
    model.fit(training.one_hot_labels(train_ds, info.num_classes, num_outputs),
              validation_data=training.one_hot_labels(val_ds, info.num_classes, num_outputs),
              epochs=options["epochs"], callbacks=callbacks, verbose=2)
    output = os.path.abspath(FLAGS.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    tmp = output[: -len(".keras")] + ".tmp.keras"
    try:
        model.save(tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    results = model.evaluate(training.one_hot_labels(val_ds, info.num_classes, num_outputs),
                             verbose=0, return_dict=True)
    accuracy = results.get("accuracy", results.get("output_0_accuracy"))
    print(f"Saved {output} (validation accuracy {accuracy:.4f}).")


if __name__ == "__main__":
    cli.run_app(main)
