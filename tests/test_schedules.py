"""The search's learning-rate schedule: Keras' CosineDecay values, with rates that are variables."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from unas_keras.search import schedules

CASES = [(3e-4, 1e-4, 10), (6e-3 * 8 / 64, 6e-3 * 8 / 64 / 3, 7), (1e-3, 3e-4, 1), (0.2, 0.0, 5),
         (2e-1, 0.3 * 2e-1, 123)]


@pytest.mark.parametrize("initial, final, steps", CASES)
def test_values_are_exactly_those_of_keras_cosine_decay(initial, final, steps):
    ours = schedules.cosine_schedule(initial, final, steps)
    keras_schedule = keras.optimizers.schedules.CosineDecay(initial, steps, alpha=final / initial)
    at = list(range(steps + 3)) + [steps * 10]
    # Traced and eager values differ in the last bit now and then (graph rewrites), for Keras' own
    # schedule too: each is compared with Keras' in the same mode, with the optimizer's int64 counter.
    traced, keras_traced = tf.function(lambda step: ours(step)), tf.function(lambda step: keras_schedule(step))
    for step in at:
        expected = np.asarray(keras_schedule(step))
        assert np.asarray(ours(step)).dtype == expected.dtype == np.float32
        assert np.asarray(ours(step)) == expected, step  # bit for bit
        step = tf.constant(step, tf.int64)
        assert np.asarray(traced(step)) == np.asarray(keras_traced(step)), int(step)
    assert float(ours(steps)) == pytest.approx(final, rel=1e-6, abs=1e-12)


def test_set_rates_changes_a_traced_schedule_without_tracing_it_again():
    ours = schedules.cosine_schedule(1e-3, 3e-4, 20)
    traces = []

    @tf.function
    def rate(step):
        traces.append(1)
        return ours(step)

    first = [float(rate(tf.constant(s, tf.int64))) for s in (0, 7, 20)]
    ours.set_rates(5e-2, 0.1)
    second = [float(rate(tf.constant(s, tf.int64))) for s in (0, 7, 20)]
    assert len(traces) == 1
    other = keras.optimizers.schedules.CosineDecay(5e-2, 20, alpha=0.1)
    other_traced = tf.function(lambda step: other(step))
    assert second == [float(other_traced(tf.constant(s, tf.int64))) for s in (0, 7, 20)]
    assert first != second
    assert (ours.initial_learning_rate, ours.alpha) == (5e-2, 0.1)


def test_serialises_with_float_rates_and_its_variables_are_settings():
    ours = schedules.cosine_schedule(3e-4, 1e-4, 10, name="weight_cosine_decay")
    config = keras.optimizers.schedules.serialize(ours)
    inner = config["config"]
    assert isinstance(inner["initial_learning_rate"], float) and inner["initial_learning_rate"] == 3e-4
    assert inner["alpha"] == 1e-4 / 3e-4 and inner["decay_steps"] == 10
    again = keras.optimizers.schedules.deserialize(config)
    assert isinstance(again, schedules.VariableCosineDecay)
    assert [float(again(s)) for s in range(12)] == [float(ours(s)) for s in range(12)]
    assert [s.name for s in ours.settings] == ["weight_cosine_decay_initial_learning_rate",
                                               "weight_cosine_decay_alpha", "weight_cosine_decay_one_minus_alpha"]


def test_optimizer_with_the_schedule_keeps_its_settings_out_of_its_variables():
    from unas_keras import optimizers

    schedule = schedules.cosine_schedule(1e-3, 3e-4, 20)
    optimizer = optimizers.Adam(schedule, weight_decay=1e-4, variable_weight_decay=True)
    optimizer.build([keras.Variable(np.zeros(3, "float32"))])
    settings = {id(s.variable) for s in optimizer.settings}
    assert len(settings) == 4  # the weight decay, then the schedule's three
    assert not settings & {id(v) for v in optimizer.variables}  # not checkpointed
