"""What an exported program (``.pt2``) may do before satkit runs it: pure tensor operators only.

A ``.pt2`` holds no Python source, but it is still a program. Its graph can name
any operator torch knows, and some touch the world: ``aten.from_file(path,
shared=True)`` maps a file read-write, so an in-place op on its result writes
into that file; ``torch.ops.higher_order`` operators call back into Python;
operators of other namespaces run whatever their library registered. The
serialized program also carries text torch evaluates as Python while loading:
symbolic shape expressions go through ``sympy.sympify`` (``eval``) and guard code
through ``exec`` in ``ExportedProgram.module()``.

So a program is admitted by an allow-list, not a deny-list, checked twice:

1. :func:`check_serialized_program`, on the archive's JSON before torch parses
   it: every operator a node names (nested graphs included) is on the list, no
   custom objects, every shape expression is arithmetic over shape symbols.
2. :func:`check_graph_module`, on the loaded graph's operator objects before the
   first call: the same list, and an operator that writes in place may write
   only into a tensor the graph itself made, never into an input, a weight or a
   buffer, nor a view of one.

Guard code (Python that ``ExportedProgram.module()`` exec()s) is admitted only when
it is a comparison on input sizes (:func:`check_guards`), before and after loading.
"""

from __future__ import annotations

import io
import operator
import re
import tokenize
from typing import Any, Iterator

from satkit.errors import ModelError

# ATen operator packets a classifier's exported graph may call. Two groups, both side-effect-free:
# - torch's core ATen opset (functional by definition; what ``run_decompositions()`` gives), and
# - the composite and in-place operators of the default export IR (``torch.export.export`` keeps
#   ``linear``, ``conv2d``, ``relu_``, ...), as found in exports of the paper's 69 timm models,
#   common timm families and the digits zoo (torch 2.14), plus their close relatives.
# Not here, by design: file and storage operators (from_file, set_, _nested_*), anything that
# reads or writes outside its tensors, distributed/collective ops, and all other namespaces.
CORE_OPS = frozenset("""
_adaptive_avg_pool2d _adaptive_avg_pool3d _cdist_forward _embedding_bag _fft_c2r _fft_r2c _local_scalar_dense
_log_softmax _native_batch_norm_legit _native_batch_norm_legit_no_training _pdist_forward _softmax _to_copy
abs acos acosh add addmm alias amax amin any arange argmax argmin as_strided asin asinh atan atan2 atanh avg_pool2d
avg_pool3d bitwise_and bitwise_not bitwise_or bitwise_xor bmm cat ceil clamp clone col2im constant_pad_nd
convolution copy cos cosh cumsum diagonal div elu embedding empty empty_strided eq erf exp expand expm1 fill flip
floor fmod full full_like gather ge gelu grid_sampler_2d gt hardtanh index index_put index_select isinf isnan le
leaky_relu log log10 log1p log2 logical_and logical_not logical_or logical_xor lt masked_scatter max
max_pool2d_with_indices max_pool3d_with_indices maximum mean min minimum mm mul native_dropout native_group_norm
native_layer_norm ne neg nonzero permute pow prod rand randn randperm reciprocal reflection_pad1d reflection_pad2d
reflection_pad3d relu remainder repeat replication_pad2d replication_pad3d round rsqrt scalar_tensor scatter
scatter_add scatter_reduce select select_scatter sigmoid sign sin sinh slice slice_scatter sort split_with_sizes
sqrt squeeze sub sum sym_numel sym_size sym_storage_offset sym_stride tan tanh topk trunc unsqueeze
upsample_bilinear2d upsample_nearest2d var view where
""".split())

EXPORT_IR_OPS = frozenset("""
_assert_scalar _assert_tensor_metadata _batch_norm_no_update _safe_softmax _scaled_dot_product_flash_attention_for_cpu
_scaled_dot_product_efficient_attention _scaled_dot_product_flash_attention _unsafe_index _unsafe_view
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d addcdiv addcmul
addmv alias_copy alpha_dropout argsort avg_pool1d baddbmm batch_norm bilinear broadcast_to celu channel_shuffle chunk
clamp_max clamp_min clip concat concatenate contiguous conv1d conv2d conv3d conv_transpose1d conv_transpose2d
cosine_similarity cumprod detach dot dropout einsum embedding_renorm empty_like erfinv exp2 expand_as
feature_alpha_dropout feature_dropout flatten im2col floor_divide frac full group_norm hardshrink hardsigmoid hardswish
instance_norm layer_norm lerp lift_fresh lift_fresh_copy linalg_vector_norm linear log_softmax logsumexp masked_fill
matmul max_pool1d max_pool2d max_pool3d mish movedim mv nan_to_num narrow native_batch_norm native_channel_shuffle
new_empty new_full new_ones new_zeros norm ones ones_like outer pad pixel_shuffle pixel_unshuffle relu6 repeat_interleave
reshape reshape_as rms_norm roll rrelu rsub scaled_dot_product_attention selu silu softmax softplus split square stack
std std_mean swapaxes sym_constrain_range sym_constrain_range_for_size t tile to transpose type_as unbind unflatten
unfold upsample_bicubic2d upsample_bilinear2d upsample_linear1d upsample_nearest1d upsample_nearest3d var_mean
view_as zeros zeros_like
""".split())

# In-place forms a classifier uses (inplace activations, residual adds). Each write is checked to land
# in a tensor the graph made itself (see _check_writes).
INPLACE_OPS = frozenset("""
add_ addcmul_ clamp_ clamp_max_ clamp_min_ copy_ div_ dropout_ elu_ fill_ gelu_ hardsigmoid_ hardswish_ hardtanh_
leaky_relu_ masked_fill_ mish_ mul_ neg_ relu_ relu6_ rsqrt_ selu_ sigmoid_ silu_ sqrt_ sub_ tanh_ unsqueeze_
zero_ celu_ exp_ index_put_ scatter_ scatter_add_
""".split())

ALLOWED_ATEN = CORE_OPS | EXPORT_IR_OPS | INPLACE_OPS

# Plain Python functions on shape integers that export graphs call (``x.size(0) * 197``).
PY_FUNCS = {
    "_operator." + n: getattr(operator, n)
    for n in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pos", "eq", "ne", "lt", "le",
              "gt", "ge", "and_", "or_", "not_")
}
_SYM_FUNCS = ("sym_max", "sym_min", "sym_float", "sym_int", "sym_not", "sym_ite", "sym_sum")


def _sym_funcs() -> dict[str, Any]:
    import torch

    return {"torch." + n: getattr(torch, n) for n in _SYM_FUNCS if hasattr(torch, n)}


_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)")


def _refuse(where: str, what: str) -> ModelError:
    return ModelError(
        f"{where}: the exported program {what}, outside the pure tensor operators satkit runs from a .pt2 "
        "(files, custom or Python-calling operators could act outside the model); pass --allow-code-execution "
        "only if you trust the file"
    )


# ------------------------------------------------------------------ 1. the serialized program

# torch writes shape expressions with sympy's ``srepr`` (``Mul(Integer(197), Symbol('s77', positive=True,
# integer=True))``) and parses them with ``sympify``, which is ``eval``. Admitted: calls of sympy and torch
# shape functions by name, integers, quoted shape-symbol names and assumption keywords. Refused: any other
# name (builtins), attributes, subscripts, other strings, and the power and shift functions, whose integer
# arguments would make sympy build numbers of any size (Pow(Integer(2), Integer(10**18))).
_SYMBOL = re.compile(r"[a-z]\d{1,9}")
_QUOTED_SYMBOL = re.compile(r"""(['"])[a-z]\d{1,9}\1""")
_EXPR_NAMES = frozenset("""
Symbol Dummy Integer Rational Float Add Mul Max Min Mod Abs Eq Ne Lt Le Gt Ge StrictLessThan StrictGreaterThan
LessThan GreaterThan Equality Unequality And Or Not BooleanTrue BooleanFalse true false True False
FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv IsNonOverlappingAndDenseIndicator
TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat IntTrueDiv FloatTrueDiv Identity
positive negative nonnegative nonpositive integer real finite zero nonzero even odd commutative
""".split())
_EXPR_OPS = frozenset("+ - * / // % ( ) , = < > <= >= == != & | ~".split())
_EXPR_MAX_CHARS = 4000  # torch's expressions are a few symbols long; this bounds parse time and number sizes


def _check_tokens(text: str, where: str, what: str, names: Any, quoted: re.Pattern[str], ops: frozenset[str]) -> None:
    """Refuse ``text`` unless every Python token is a short number, a name ``names(name)`` admits, a string
    ``quoted`` matches, or an operator in ``ops``: what torch writes, and nothing that could call or reach
    anything else when torch evaluates it."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        raise _refuse(where, f"holds {what} ({text[:40]!r})") from None
    for t in tokens:
        if t.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        ok = (
            (t.type == tokenize.NUMBER and len(t.string) <= 20 and re.fullmatch(r"\d+(\.\d+)?", t.string))
            or (t.type == tokenize.NAME and names(t.string))
            or (t.type == tokenize.STRING and quoted.fullmatch(t.string))
            or (t.type == tokenize.OP and t.string in ops)
        )
        if not ok:
            raise _refuse(where, f"holds {what} ({t.string[:40]!r})")


def check_expression(expr: str, where: str) -> None:
    """Refuse a symbolic shape expression that is more than arithmetic over shape symbols."""
    if not isinstance(expr, str) or len(expr) > _EXPR_MAX_CHARS:
        raise _refuse(where, "holds an oversized shape expression")
    _check_tokens(expr, where, "a shape expression that is not arithmetic over shape symbols",
                  lambda n: bool(_SYMBOL.fullmatch(n)) or n in _EXPR_NAMES, _QUOTED_SYMBOL, _EXPR_OPS)


def _target_allowed(target: str) -> bool:
    m = _ATEN_TARGET.fullmatch(target)
    if m:
        return m.group(1) in ALLOWED_ATEN
    return target in PY_FUNCS or target.removeprefix("torch.") in _SYM_FUNCS and target.startswith("torch.")


def _walk_json(obj: Any) -> Iterator[dict]:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            yield o
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)


def check_serialized_program(program: Any, where: str) -> None:
    """Check a ``models/*.json`` program before torch deserializes it (see the module docstring)."""
    if not isinstance(program, dict) or "graph_module" not in program:
        raise ModelError(f"{where}: damaged torch.export archive (no program graph)")
    for d in _walk_json(program):
        target = d.get("target")
        if isinstance(target, str) and isinstance(d.get("inputs"), list) and "outputs" in d:
            if not _target_allowed(target):
                raise _refuse(where, f"calls {target.removeprefix('torch.ops.')}")
        if d.get("custom_obj_values"):
            raise _refuse(where, "holds custom (torchbind) objects")
        expr = d.get("expr_str")
        if expr is not None:
            check_expression(expr, where)
    # range constraints are keyed by symbol names, which the deserializer also parses
    for key in (program.get("range_constraints") or {}):
        check_expression(key, where)
    check_guards(program.get("guards_code"), where)


# ------------------------------------------------------------------ 2. the loaded graph


def _op_name(target: Any) -> str:
    return str(getattr(target, "__name__", target))


def check_graph_module(gm: Any, where: str) -> None:
    """Check every node of ``gm`` and of every graph module inside it, before the first call."""
    import torch
    import torch.fx

    funcs = set(PY_FUNCS.values()) | set(_sym_funcs().values())
    for mod in gm.modules():
        if not isinstance(mod, torch.fx.GraphModule):
            continue
        for node in mod.graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op != "call_function":
                raise _refuse(where, f"has a {node.op} node ({node.target})")
            t = node.target
            if isinstance(t, torch._ops.OpOverload):
                if t.namespace != "aten" or t.name().split("::", 1)[1].split(".", 1)[0] not in ALLOWED_ATEN:
                    raise _refuse(where, f"calls {t.name()}")
                _check_writes(node, t, where)
            elif not any(t is f for f in funcs):
                raise _refuse(where, f"calls {_op_name(t)}")


def _check_writes(node: Any, op: Any, where: str) -> None:
    """An in-place or out= operator may write only into a tensor the graph created."""
    for i, arg in enumerate(op._schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
        for target in value if isinstance(value, (list, tuple)) else [value]:
            root = _storage_root(target)
            if root is not None and root.op in ("placeholder", "get_attr"):
                raise _refuse(where, f"writes into its input, a weight or a buffer ({op.name()} on {root.target})")


def _storage_root(value: Any) -> Any:
    """The node whose tensor ``value`` shares memory with: follow views back to where the memory was made."""
    import torch

    node = value
    seen = 0
    while hasattr(node, "op") and node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
        rets = node.target._schema.returns
        if not any(r.alias_info is not None for r in rets) or not node.args:
            return node  # a fresh tensor
        node = node.args[0]
        seen += 1
        if seen > 100_000:
            break
    if hasattr(node, "op") and node.op == "call_function":  # getitem of a multi-output op: its source
        src = node.args[0] if node.args else None
        return _storage_root(src) if src is not None and src is not node else node
    return node if hasattr(node, "op") else None


# Guard code is Python that ``ExportedProgram.module()`` exec()s. Admitted: comparisons and arithmetic on
# input sizes as torch writes them (``L['x'].size()[0] >= 2``, ``math.isnan(L['y'])``); nothing else.
_GUARD_NAMES = frozenset("L size math isnan inf and or not True False".split())
_GUARD_OPS = frozenset("[ ] ( ) . , + - * // % == != < <= > >=".split())
_QUOTED_NAME = re.compile(r"""(['"])[A-Za-z_][A-Za-z0-9_]{0,99}\1""")


def check_guards(guards: Any, where: str) -> None:
    """Refuse guard code that is more than a comparison on input sizes."""
    if guards is None:
        return
    if not isinstance(guards, list) or len(guards) > 10_000:
        raise _refuse(where, "holds malformed guard code")
    for g in guards:
        if not isinstance(g, str) or len(g) > _EXPR_MAX_CHARS:
            raise _refuse(where, "holds malformed guard code")
        _check_tokens(g, where, "guard code that is not a size check", _GUARD_NAMES.__contains__, _QUOTED_NAME, _GUARD_OPS)
