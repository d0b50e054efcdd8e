"""Every registered space round-trips through its SpaceSpec and its Supernet.

The space registry (`unas_keras.space.registry`) is the one entry per space; `Supernet`
(`unas_keras.networks.supernet`) the one interface of the supernets. These tests run over
`registry.names()`, so a new space is covered by registering it.
"""

import keras
import numpy as np
import pytest

from unas_keras.networks import build_model, build_supernet
from unas_keras.networks.supernet import Supernet, one_hot_samples
from unas_keras.space import Architecture, registry, sample_architecture, space_names

SPACES = registry.names()


def _tiny(spec):
    """The demo profile's supernet options and image shape (the smallest the package ships)."""
    defaults = spec.defaults("demo")
    side = defaults["resolution"]
    return defaults["space_options"], (side, side, defaults["image_channels"])


@pytest.fixture(scope="module", params=SPACES)
def built(request):
    spec = registry.get(request.param)
    options, shape = _tiny(spec)
    keras.utils.set_random_seed(0)
    return spec, options, shape, spec.build_supernet(3, shape, **spec.builder_options(options))


def test_registry_lists_every_space_once():
    assert SPACES == space_names() and len(set(SPACES)) == len(SPACES) == 3
    for name in SPACES:
        spec = registry.get(name)
        assert spec.name == name
        assert spec.search_space_class.name == name
        assert set(spec.search_space_options) <= set(spec.supernet_options)
        assert set(spec.inherited_network_options) <= set(spec.network_options) & set(spec.supernet_options)
        assert set(spec.option_help) == set(spec.supernet_options)
    with pytest.raises(ValueError, match="Unknown search space 'nasnet'"):
        registry.get("nasnet")


@pytest.mark.parametrize("name", SPACES)
def test_defaults_of_every_profile_pass_the_checks(name):
    spec = registry.get(name)
    assert set(spec.profile_defaults) == {"demo", "cifar", "imagenet", "generic"}
    for profile in spec.profile_defaults:
        defaults = spec.defaults(profile)
        options = defaults["space_options"]
        assert set(options) <= set(spec.supernet_options), (profile, options)
        checked = spec.check_supernet_options({k: options.get(k) for k in spec.supernet_options})
        assert {k: checked[k] for k in options} == options
        # The search space of the defaults is the space's class with the same decisions.
        space = spec.search_space(**checked)
        assert isinstance(space, spec.search_space_class)
        assert space.decisions() == spec.search_space_class(**space.options()).decisions()
        assert defaults is not spec.defaults(profile)  # a fresh copy each time
    with pytest.raises(ValueError, match="profile"):
        spec.defaults("mnist")


@pytest.mark.parametrize("name", SPACES)
def test_a_bad_option_raises_a_value_error_naming_it(name):
    spec = registry.get(name)
    options, shape = _tiny(spec)
    full = {k: options.get(k) for k in spec.supernet_options}
    for option in spec.supernet_options:
        with pytest.raises(ValueError, match=option):
            spec.check_supernet_options(dict(full, **{option: "bad-value"}))
    with pytest.raises(ValueError, match="no_such_option"):
        build_supernet(name, 3, shape, no_such_option=1)
    with pytest.raises(ValueError, match="no_such_option"):
        sample_architecture(name, seed=0, no_such_option=1)
    with pytest.raises(ValueError, match="no_such_option"):
        build_model(sample_architecture(name, seed=0), 3, shape, no_such_option=1)


def test_the_supernet_is_a_supernet_of_the_registered_space(built):
    spec, options, shape, supernet = built
    assert isinstance(supernet, Supernet) and isinstance(supernet, keras.Model)
    assert type(supernet).__module__ == spec.networks_module
    assert supernet.image_shape == shape and supernet.num_classes == 3
    # An attribute set once, not an object made on every access.
    assert supernet.search_space is supernet.search_space
    assert isinstance(supernet.search_space, spec.search_space_class)
    # The decisions the search's distribution is made of are those of the registry's search space.
    assert supernet.decisions() == spec.search_space(**options).decisions()
    assert isinstance(type(supernet).skips_unchosen_blocks, bool)


def test_every_supernet_takes_the_same_call(built):
    """`call((images, mix_weights(samples)), training, one_hot)`: one-hot logits equal with and without
    `one_hot=True`, and equal to the relaxed mixture's when the relaxed sample is that one-hot."""
    spec, options, shape, supernet = built
    arch = sample_architecture(spec.name, seed=4, **options)
    images = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(2,) + shape).astype("float32"))
    weights = supernet.architecture_weights(arch)
    plain = np.asarray(supernet((images, weights), training=False))
    hard = np.asarray(supernet((images, weights), training=False, one_hot=True))
    assert plain.shape == (2, 3) and np.isfinite(plain).all()
    np.testing.assert_allclose(hard, plain, atol=1e-5)
    samples = one_hot_samples(supernet.search_space, arch, batch_size=2)  # one architecture per example
    per_example = np.asarray(supernet((images, supernet.mix_weights(samples)), training=False))
    np.testing.assert_allclose(per_example, plain, atol=1e-5)
    assert supernet.search_space.to_architecture(supernet.search_space.encode(arch)) == arch


def test_get_config_and_keras_file_round_trip(built, tmp_path):
    spec, _, shape, supernet = built
    clone = type(supernet).from_config(supernet.get_config())
    assert isinstance(clone, Supernet)
    assert clone.count_params() == supernet.count_params()
    assert clone.decisions() == supernet.decisions() and clone.image_shape == supernet.image_shape
    arch = supernet.search_space.sample(seed=1)
    images = keras.ops.convert_to_tensor(np.random.default_rng(1).normal(size=(2,) + shape).astype("float32"))
    expected = np.asarray(supernet((images, supernet.architecture_weights(arch)), training=False))
    path = str(tmp_path / f"{spec.name}_supernet.keras")
    supernet.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(supernet) and loaded.get_config() == supernet.get_config()
    got = np.asarray(loaded((images, loaded.architecture_weights(arch)), training=False))
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name", SPACES)
def test_the_derived_network_builds_from_the_registry(name):
    spec = registry.get(name)
    options, shape = _tiny(spec)
    network_options = spec.network_options_from_search(options)
    assert set(network_options) <= set(spec.network_options)
    arch = sample_architecture(name, seed=2, **options)
    assert isinstance(arch, Architecture)
    model = build_model(arch, 3, shape, **network_options)
    assert model.output_shape[-1] == 3
