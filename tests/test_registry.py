import pytest

from sampling_mlp import registry
from sampling_mlp.optim import OptimConfig


def test_unknown_method_lists_known_ones():
  with pytest.raises(ValueError, match="known methods: .*standard"):
    registry.get("slide")


def test_standard_is_registered_with_exact_flops():
  spec = registry.get("standard")
  impl = spec.make(registry.ModelConfig(input_dim=784, num_classes=10,
                                        hidden=1000, depth=3), OptimConfig())
  # forward 3 products; backward: weight grads for 4 layers, input grads for 3.
  sizes = (784, 1000, 1000, 1000, 10)
  fwd = sum(n * m for n, m in zip(sizes[:-1], sizes[1:]))
  assert impl.step_flops(2) == 2 * (3 * fwd - 784 * 1000)


def test_option_validation_messages():
  opt = registry.Option("x_ratio", 0.5, "a ratio",
                        check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
  opt.validate(1.0)
  with pytest.raises(ValueError, match=r"--x_ratio=1.5: must be in \(0, 1\]"):
    opt.validate(1.5)
  enum = registry.Option("x_mode", "a", "mode", choices=("a", "b"))
  with pytest.raises(ValueError, match="not one of a, b"):
    enum.validate("c")


def test_spec_config_keeps_own_options_only():
  spec = registry.MethodSpec(
      name="_dummy", summary="", build=None,
      options=(registry.Option("d_k", 3, "k"),))
  assert spec.config({"d_k": 5, "other": 1}) == {"d_k": 5}
  assert spec.config() == {"d_k": 3}


def test_model_config_errors():
  with pytest.raises(ValueError, match="activation"):
    registry.ModelConfig(input_dim=4, num_classes=2, activation="gelu")
  with pytest.raises(ValueError, match="depth"):
    registry.ModelConfig(input_dim=4, num_classes=2, depth=-1)


def test_option_type_errors_name_the_flag():
  opt = registry.Option("x_k", 3, "k")
  with pytest.raises(ValueError, match=r"--x_k=1.5: expected a int"):
    opt.validate(1.5)
  with pytest.raises(ValueError, match="expected a bool"):
    registry.Option("x_b", False, "b").validate("yes")
  with pytest.raises(ValueError, match="expected a float"):
    registry.Option("x_r", 0.5, "r").validate("0.5")
  registry.Option("x_r", 0.5, "r").validate(1)  # ints are fine for floats
