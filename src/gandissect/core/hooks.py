"""Layer instrumentation: retain or edit the output of named submodules of any `torch.nn.Module`.

    with Trace(generator, ["layer3", "blocks.2.conv"], edit={"layer3": UnitEdit.ablate([4, 9])}) as trace:
        image = generator(z)
        features = trace["layer3"]

Layers are named as in `model.named_modules()` (dotted paths into nested modules). On exit every hook
is removed, also when the forward pass raised. `stop=True` ends the forward pass as soon as every
retained layer has been seen, which saves the rest of the network when only features are needed.
Retained outputs are copies, so in-place operations that run later (`nn.ReLU(inplace=True)`) cannot
change them. A layer that returns a tuple or list is traced through one element, chosen with `select`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeAlias

import torch
from torch import nn

from gandissect.core.edits import UnitEdit
from gandissect.core.errors import ConfigError, GandissectError, ShapeError

EditFn: TypeAlias = Callable[..., torch.Tensor]
"""An edit of one layer's output: `fn(output)` or `fn(output, layer_name)`, returning the new output."""
Edit: TypeAlias = UnitEdit | EditFn
Edits: TypeAlias = Edit | Sequence[Edit]
OutputShape: TypeAlias = tuple[Any, ...]
"""A tensor's shape without the batch dimension, or for a tuple output a tuple of its elements' shapes."""


class UnknownLayerError(GandissectError, KeyError):
    """A layer name that the model does not have; the message lists the ones it has."""

    def __str__(self) -> str:
        return str(self.args[0])


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early; caught by `Trace`."""


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule of `model`, in registration order."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if not name or name not in modules:
        names = layer_names(model)
        shown = ", ".join(names[:60]) + (f", ... ({len(names)} in all)" if len(names) > 60 else "")
        raise UnknownLayerError(f"{type(model).__name__} has no layer {name!r}; its layers are: {shown}")
    return modules[name]


def display_layers(model: nn.Module) -> list[str]:
    """The layers worth listing by default: the model's children, where a ModuleList or ModuleDict (which
    never runs itself) is replaced by its children, and so is a plain nn.Sequential that is the only child
    of the model or of a Sequential (a wrapper such as DCGAN's `main`, whose output is the image)."""
    return _display(model, "", wrapper_allowed=True)


def _display(module: nn.Module, prefix: str, wrapper_allowed: bool) -> list[str]:
    children = list(module.named_children())
    names: list[str] = []
    for name, child in children:
        kind = type(child)
        if kind in (nn.ModuleList, nn.ModuleDict) or (kind is nn.Sequential and wrapper_allowed and len(children) == 1):
            names += _display(child, f"{prefix}{name}.", wrapper_allowed=kind is nn.Sequential)
        else:
            names.append(f"{prefix}{name}")
    return names


def _takes_layer(fn: Callable[..., Any]) -> bool:
    """Whether `fn` is called as `fn(output, layer_name)`: it has two required positional parameters or *args.
    Callables without a signature (torch builtins such as `torch.zeros_like`) are called as `fn(output)`."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is inspect.Parameter.empty]
    return len(required) >= 2 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def _bind(layer: str, edit: Edit) -> Callable[[torch.Tensor, str], torch.Tensor]:
    """`edit` as a function of (output, layer name), whatever its own arity."""
    if isinstance(edit, UnitEdit):
        return edit.apply
    if not callable(edit):
        raise ConfigError(f"the edit of layer {layer!r} must be a UnitEdit or a callable, got {type(edit).__name__}")
    if _takes_layer(edit):
        return edit

    def one_arg(output: torch.Tensor, name: str) -> torch.Tensor:
        return edit(output)

    return one_arg


def _element(layer: str, output: Any, index: int | None) -> torch.Tensor:
    """The tensor to trace in a layer's output: the output itself, or element `index` of a tuple or list."""
    if isinstance(output, tuple | list):
        kind = type(output).__name__
        if index is None:
            raise ShapeError(f"layer {layer!r} returns a {kind} of {len(output)} elements; "
                             f"pass select={{{layer!r}: index}} to choose the one to retain or edit")
        if not -len(output) <= index < len(output):
            raise ShapeError(f"select={{{layer!r}: {index}}} is out of range: layer {layer!r} returns a {kind} "
                             f"of {len(output)} elements")
        output = output[index]
    elif index is not None:
        raise ShapeError(f"select names element {index} of layer {layer!r}, but it returns a "
                         f"{type(output).__name__}, not a tuple or list")
    if not isinstance(output, torch.Tensor):
        raise ShapeError(f"layer {layer!r} gives {type(output).__name__}; only tensors (or a tensor element of a "
                         "tuple chosen with select=) can be traced")
    return output


def _replace(output: Any, index: int | None, tensor: torch.Tensor) -> Any:
    """`output` with the traced element replaced by `tensor` (the same container type)."""
    if index is None:
        return tensor
    items = list(output)
    items[index] = tensor
    if isinstance(output, list):
        return items
    return type(output)(*items) if hasattr(output, "_fields") else tuple(items)


class Trace(AbstractContextManager):
    """Retain and/or edit the outputs of named layers while the context is open.

    `edit` maps a layer to a UnitEdit, a callable `fn(output)` or `fn(output, layer_name)`, or a list of
    those applied in order. `select` maps a layer returning a tuple or list to the index of the element
    to retain and edit. With `detach=False` retained outputs keep their graph, so gradients flow through
    edits (to a UnitEdit's alpha, say)."""

    def __init__(self, model: nn.Module, retain: Iterable[str] = (), edit: Mapping[str, Edits] | None = None,
                 detach: bool = True, stop: bool = False, select: Mapping[str, int] | None = None) -> None:
        self.model = model
        self.retain_layers = list(dict.fromkeys(retain))
        self.edits = dict(edit or {})
        self.select = dict(select or {})
        self.detach = detach
        self.stop = stop
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._edit_fns = {name: [_bind(name, e) for e in (edits if isinstance(edits, list | tuple) else [edits])]
                          for name, edits in self.edits.items()}
        for name in self.select:
            get_layer(model, name)
        layers = list(dict.fromkeys([*self.retain_layers, *self.edits]))
        self._modules = {name: get_layer(model, name) for name in layers}

    def __enter__(self) -> Trace:
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        self.close()
        return exc_type is StopForward

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], Any]:
        index = self.select.get(name)
        edits = self._edit_fns.get(name, [])
        retained = name in self.retain_layers

        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            tensor = _element(name, output, index)
            for fn in edits:
                tensor = fn(tensor, name)
                if not isinstance(tensor, torch.Tensor):
                    raise ShapeError(f"the edit of layer {name!r} returned {type(tensor).__name__}, not a tensor")
            if retained:
                kept = tensor.detach() if self.detach else tensor
                last = self.stop and len(self.outputs.keys() | {name}) == len(self.retain_layers)
                self.outputs[name] = kept if last else kept.clone()  # a copy, unless nothing runs after it
                if last:
                    raise StopForward
            return _replace(output, index, tensor) if edits else None

        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.outputs:
            raise KeyError(f"layer {name!r} was not retained or has not run; retained: {sorted(self.outputs)}")
        return self.outputs[name]


def _shape(output: Any) -> OutputShape | None:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape[1:])
    if isinstance(output, tuple | list):
        shapes = tuple(_shape(item) for item in output)
        return shapes if any(shape is not None for shape in shapes) else None
    return None


def layer_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, OutputShape]:
    """Output shape (without the batch dimension) of every submodule that returns a tensor, in the order
    they ran; for a tuple or list output, the tuple of its elements' shapes (None for a non-tensor)."""
    shapes: dict[str, OutputShape] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(module: nn.Module, inputs: Any, output: Any, name: str = name) -> None:
            shape = _shape(output)
            if shape is not None and name not in shapes:
                shapes[name] = shape

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return shapes
