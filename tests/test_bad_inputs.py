"""Bad inputs to every op and module give a cvops error that names the op and the argument, driven by
the one table of tests/op_specs.py: a valid call (sizes and dtype drawn by hypothesis) and one
mutation of one argument: a tensor argument given a wrong dtype, moved to the meta device while the
others stay on the CPU, given one dimension too few or too many, None, or a non-tensor (an int, a
list); a non-tensor argument given a value of a wrong type. The error must be a RuntimeError or a
ValueError (no TypeError, IndexError or AttributeError from inside the op, no crash) whose message
carries `cvops.<name>: ` and the argument's name. Raw torch.ops.cvops ops may instead fail in the
dispatcher's own schema check (`cvops::NAME() Expected a value of type ...`) where a value of the
wrong Python type is passed; None, mixed devices and wrong dtypes of their tensors must still be
cvops errors."""

import re

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

import cvops
from op_specs import ACCEPTED, BAD_DTYPES, SPECS, WRONG_VALUES, N, Sizes, T, modules_on

SIZES = st.builds(
    Sizes,
    b=st.integers(1, 3),
    c=st.integers(1, 4),
    d=st.integers(1, 3),
    h=st.integers(1, 3),
    w=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
# No shrinking: the failure message already names the spec, the argument and the mutation.
CHECKED = settings(
    derandomize=True,
    deadline=None,
    max_examples=8,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# The dispatcher's own schema errors: accepted for raw ops where a value of a wrong Python type is passed.
SCHEMA_MUTATIONS = ("value", "int", "list")


def _ids(specs):
    return [s.id for s in specs]


def _spec_arguments():
    return [(s, name) for s in SPECS for name in s.args]


# ---------------------------------------------------------------------------- mutations


def _rank_allowed(rank, r, args):
    if rank is None:
        return True
    if isinstance(rank, int):
        return r == rank
    if isinstance(rank, str):  # the rank of another argument
        other = args.get(rank)
        return not isinstance(other, torch.Tensor) or r == other.dim()
    low, high = rank
    return low <= r and (high is None or r <= high)


def mutations(spec, args, name):
    """The bad values for argument `name` of a valid `args`: (kind, detail) pairs."""
    arg, value = spec.args[name], args[name]
    found = []
    if isinstance(arg, N):
        for wrong, raw_ok in WRONG_VALUES[arg.kind]:
            if (wrong is None and arg.optional) or (spec.raw and not raw_ok):
                continue
            found.append(("value", wrong))
        return found
    if isinstance(value, torch.Tensor):
        accepted = ACCEPTED[arg.dtypes]
        if accepted is not None:
            found += [("dtype", dtype) for dtype in BAD_DTYPES if dtype not in accepted]
        if spec.holds_tensors or any(other != name for other in spec.tensors(args)):
            found.append(("meta", "meta"))
        for how, r in (("drop", value.dim() - 1), ("add", value.dim() + 1)):
            if r >= 0 and not _rank_allowed(arg.rank, r, args):
                found.append(("rank", how))
    if not arg.optional:
        found.append(("none", None))
    found.append(("list", [1.0, 2.0]))
    if not arg.accepts_int:
        found.append(("int", 3))
    return found


def apply(args, name, kind, detail):
    value = args[name]
    if kind == "dtype":
        new = value.to(detail)
    elif kind == "meta":
        new = value.to("meta")
    elif kind == "rank":
        if detail == "add":
            new = value.unsqueeze(-1)
        else:
            new = value.flatten(-2) if value.dim() >= 2 else value.reshape(-1)[0]
    elif kind == "none":
        new = None
    else:
        new = detail
    return {**args, name: new}


def check_error(spec, name, kind, error):
    message = str(error)
    if spec.raw and kind == "none" and "There were no tensor arguments" in message and spec.target in message:
        return  # a raw op left with no tensor has nothing to dispatch on: the dispatcher refuses it, naming the op
    named_op = any(f"cvops.{n}: " in message for n in spec.error_names)
    schema = spec.raw and kind in SCHEMA_MUTATIONS and f"{spec.target}() Expected" in message
    assert named_op or schema, f"{spec.id}, {name} ({kind}): the error does not name the op: {message}"
    assert not isinstance(error, NotImplementedError), f"{spec.id}, {name} ({kind}): {message}"
    assert re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message), (
        f"{spec.id}, {name} ({kind}): the error does not name {name}: {message}"
    )


def run_mutation(spec, args, name, kind, detail):
    bad = apply(args, name, kind, detail)
    with pytest.raises((RuntimeError, ValueError)) as info:
        spec.call(**bad)
    check_error(spec, name, kind, info.value)


# ---------------------------------------------------------------------------- tests


def test_every_op_and_module_has_a_spec():
    """The table covers the build: each public op, each module and each raw op (loop tables included)."""
    covered = {s.target for s in SPECS}
    public = {f"cvops.{name}" for name in cvops.ops.__all__ if not isinstance(getattr(cvops, name), type)}
    modules = {f"cvops.nn.{name}" for name in cvops.nn.__all__}
    raw = {n for n in torch._C._dispatch_get_all_op_names() if n.startswith("cvops::")}
    raw |= {f"cvops::{op}" for table in cvops._C.loop_tables() for op in table["ops"]}
    assert sorted((public | modules | raw) - covered) == []


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
@settings(CHECKED, max_examples=3)
@given(sizes=SIZES)
def test_the_valid_call_succeeds(spec, sizes):
    args = spec.make(sizes)
    assert list(args) == list(spec.args), "make() and args must name the same arguments, in order"
    spec.call(**args)


@pytest.mark.parametrize("spec,name", _spec_arguments(), ids=[f"{s.id}-{n}" for s, n in _spec_arguments()])
@CHECKED
@given(sizes=SIZES, data=st.data())
def test_a_bad_argument_is_a_cvops_error_naming_it(spec, name, sizes, data):
    args = spec.make(sizes)
    choices = mutations(spec, args, name)
    if not choices:
        return
    kind, detail = data.draw(st.sampled_from(choices), label="mutation")
    run_mutation(spec, args, name, kind, detail)


def _flat(result):
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for item in result for t in _flat(item)] if isinstance(result, (tuple, list)) else []


META_SPECS = [s for s in SPECS if s.meta and any(isinstance(a, T) for a in s.args.values())]


@pytest.mark.parametrize("spec", META_SPECS, ids=_ids(META_SPECS))
@settings(CHECKED, max_examples=3)
@given(sizes=SIZES)
def test_all_meta_inputs_give_the_cpu_call_shapes_and_dtypes(spec, sizes):
    args = spec.make(sizes)
    want = _flat(spec.call(**args))
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with modules_on("meta"):
        got = _flat(spec.call(**meta))
    assert [(t.shape, t.dtype) for t in got] == [(t.shape, t.dtype) for t in want]
    assert all(t.device.type == "meta" for t in got)


RAW_META_SPECS = [s for s in META_SPECS if s.raw]


@pytest.mark.parametrize("spec", RAW_META_SPECS, ids=_ids(RAW_META_SPECS))
def test_fake_tensors_pass_the_fake_kernels_checks(spec):
    """Under FakeTensorMode (as torch.compile traces), a tensor's device is its fake device."""
    args = spec.make(Sizes())
    want = _flat(spec.call(**args))
    with FakeTensorMode() as mode:
        fake = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        got = _flat(spec.call(**fake))
    assert [(t.shape, t.dtype, t.device) for t in got] == [(t.shape, t.dtype, t.device) for t in want]


# Mixed devices reach the fake kernels (the dispatcher runs the Meta kernel as soon as one input is
# a meta tensor): each tensor of each op, in turn, on meta while the others stay on the CPU.
MIXED = [
    (s, name)
    for s in SPECS
    for name, arg in s.args.items()
    if isinstance(arg, T) and (s.holds_tensors or sum(isinstance(a, T) for a in s.args.values()) > 1)
]


@pytest.mark.parametrize("spec,name", MIXED, ids=[f"{s.id}-{n}" for s, n in MIXED])
def test_fake_kernels_refuse_mixed_devices(spec, name):
    args = spec.make(Sizes())
    if args[name] is not None:
        run_mutation(spec, args, name, "meta", "meta")


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
def test_every_mutation_at_the_default_sizes(spec):
    """All of a spec's mutations, not a sample: the failures listed together."""
    args = spec.make(Sizes())
    failures = []
    for name in spec.args:
        for kind, detail in mutations(spec, args, name):
            try:
                run_mutation(spec, args, name, kind, detail)
            except (AssertionError, pytest.fail.Exception, TypeError, IndexError, AttributeError, KeyError) as error:
                failures.append(f"{name} ({kind} {detail!r}): {type(error).__name__}: {error}".splitlines()[0])
    assert failures == []
