"""One test per private name of diffrax/equinox in `sensitivity.solvers.compat`: each fails
when an upgrade moves the name, changes its kind, or changes what the toolkit relies on."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sensitivity.solvers import compat


def test_linear_rescale_maps_t_into_0_1_and_handles_equal_ends():
    assert callable(compat.linear_rescale)
    assert float(compat.linear_rescale(1.0, 1.5, 3.0)) == 0.25
    assert float(compat.linear_rescale(2.0, 2.0, 2.0)) == 0.0  # t0 == t1: zero, not NaN
    grads = jax.grad(lambda a: compat.linear_rescale(a, a, a), argnums=0)(2.0)
    assert float(grads) == 0.0


def test_chord_small_is_true_below_float_resolution_only():
    assert bool(compat.chord_small(jnp.array(1e-20)))
    assert not bool(compat.chord_small(jnp.array(1e-6)))


def test_static_keeps_a_python_value_out_of_the_leaves():
    s = compat.Static(True)
    assert s.value is True
    assert jax.tree_util.tree_leaves(s) == []
    assert jax.tree_util.tree_leaves((jnp.ones(2), compat.Static(False))) != []


def test_result_codes_round_trip_and_name_every_item():
    item = diffrax.RESULTS.max_steps_reached
    code = int(np.asarray(compat.result_code(item)))
    assert int(np.asarray(compat.result_code(diffrax.RESULTS.successful))) == 0
    back = compat.result_item(code)
    assert isinstance(back, compat.EnumerationItem)
    assert bool(back == diffrax.RESULTS.max_steps_reached)
    names = compat.result_names()
    assert names[0] == "successful" and names[code] == "max_steps_reached"
    # traced: the code is an integer array inside jit
    out = jax.jit(lambda r: compat.result_code(r))(diffrax.RESULTS.max_steps_reached)
    assert int(out) == code


def test_equinox_errors_module_has_eqx_on_error():
    module = compat.equinox_errors_module()
    assert module is not None and hasattr(module, "EQX_ON_ERROR")


def test_public_names_used_instead_of_private_ones():
    # rosenbrock.py subclasses the public AbstractLocalInterpolation; lean.py reads Tsit5's tableau
    assert issubclass(diffrax.AbstractLocalInterpolation, eqx.Module)
    tab = diffrax.Tsit5.tableau
    assert len(tab.a_lower) == 6 and np.asarray(tab.c).shape == (6,) and np.asarray(tab.b_sol).shape == (7,)


def test_while_loop_is_equinox_checkpointed_loop():
    """The lean loop's `while_loop(cond, body, init, max_steps=, kind="checkpointed")`:
    the value equals a plain loop's, and reverse mode goes through it."""
    import jax

    from sensitivity.solvers.compat import while_loop

    def run(x):
        return while_loop(lambda c: c[0] < 5, lambda c: (c[0] + 1, c[1] * x), (0, 1.0),
                          max_steps=8, kind="checkpointed")[1]

    assert run(2.0) == 32.0
    assert abs(jax.grad(run)(2.0) - 5 * 2.0 ** 4) < 1e-12
