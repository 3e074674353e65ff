"""Headless runner for API-format workflow JSON against the ComfyUI test double.

Mirrors ComfyUI's execution rules that matter for this pack:
* validation before execution: unknown node types, missing required inputs, unknown inputs, links to missing
  nodes or outputs, link type mismatches (``*`` matches anything; COMBO outputs match COMBO inputs), COMBO values
  not in the options, INT/FLOAT out of range — every error names the node id and class;
* only nodes that an output node depends on run, in topological order (cycles are errors);
* list semantics: an output declared ``is_output_list`` feeds downstream nodes item by item (the node runs once
  per item, other inputs broadcast), unless the consumer has ``is_input_list``;
* ``ui`` results of output nodes are collected per node id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_api.latest import io


class WorkflowError(RuntimeError):
    def __init__(self, node_id: str | None, class_type: str | None, message: str):
        self.node_id, self.class_type = node_id, class_type
        where = f"node {node_id} ({class_type}): " if node_id is not None else ""
        super().__init__(where + message)


@dataclass
class RunResult:
    outputs: dict[str, tuple] = field(default_factory=dict)  # node id -> output values (lists for list outputs)
    ui: dict[str, dict] = field(default_factory=dict)  # node id -> ui dict
    order: list[str] = field(default_factory=list)


def _is_link(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def _types_match(out_type: str, in_type: str) -> bool:
    if out_type == "*" or in_type == "*":
        return True
    outs, ins = set(str(out_type).split(",")), set(str(in_type).split(","))
    return bool(outs & ins)


class Runner:
    def __init__(self, node_classes: Iterable[type[io.ComfyNode]]):
        self.classes: dict[str, type[io.ComfyNode]] = {}
        self.schemas: dict[str, io.Schema] = {}
        for cls in node_classes:
            schema = cls.GET_SCHEMA()
            if schema.node_id in self.classes:
                raise ValueError(f"duplicate node id {schema.node_id}")
            self.classes[schema.node_id] = cls
            self.schemas[schema.node_id] = schema

    # ------------------------------------------------------------------------------------------ validation
    def validate(self, prompt: dict[str, dict]) -> None:
        for nid, node in prompt.items():
            ctype = node.get("class_type")
            if ctype not in self.schemas:
                raise WorkflowError(nid, ctype, "unknown node type (is the pack loaded?)")
            schema = self.schemas[ctype]
            given = node.get("inputs", {})
            declared = {i.id: i for i in schema.inputs}
            for name in given:
                if name not in declared:
                    raise WorkflowError(nid, ctype, f"unknown input '{name}'")
            for inp in schema.inputs:
                if inp.id not in given:
                    if not inp.optional:
                        raise WorkflowError(nid, ctype, f"required input '{inp.id}' is missing")
                    continue
                value = given[inp.id]
                if _is_link(value):
                    self._check_link(prompt, nid, ctype, inp, value)
                else:
                    self._check_widget(nid, ctype, inp, value)

    def _check_link(self, prompt, nid, ctype, inp, link) -> None:
        src, idx = link
        if src not in prompt:
            raise WorkflowError(nid, ctype, f"input '{inp.id}' links to missing node {src}")
        src_schema = self.schemas.get(prompt[src].get("class_type"))
        if src_schema is None:
            return  # reported when that node is validated
        if not 0 <= idx < len(src_schema.outputs):
            raise WorkflowError(nid, ctype, f"input '{inp.id}' links to output {idx} of node {src}, "
                                            f"which has {len(src_schema.outputs)} outputs")
        out_type = src_schema.outputs[idx].get_io_type()
        in_type = inp.get_io_type()
        if not _types_match(out_type, in_type):
            raise WorkflowError(nid, ctype, f"input '{inp.id}' expects {in_type} but node {src} "
                                            f"({src_schema.node_id}) output {idx} is {out_type}")

    @staticmethod
    def _check_widget(nid, ctype, inp, value) -> None:
        if isinstance(inp, io.Combo.Input):
            if inp.options is not None and value not in inp.options:
                raise WorkflowError(nid, ctype, f"value {value!r} of '{inp.id}' is not in the list {inp.options}")
        elif isinstance(inp, (io.Int.Input, io.Float.Input)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise WorkflowError(nid, ctype, f"'{inp.id}' must be a number, got {value!r}")
            if inp.min is not None and value < inp.min:
                raise WorkflowError(nid, ctype, f"'{inp.id}' = {value} is below the minimum {inp.min}")
            if inp.max is not None and value > inp.max:
                raise WorkflowError(nid, ctype, f"'{inp.id}' = {value} is above the maximum {inp.max}")
        elif isinstance(inp, io.Boolean.Input) and not isinstance(value, bool):
            raise WorkflowError(nid, ctype, f"'{inp.id}' must be a boolean, got {value!r}")
        elif isinstance(inp, io.String.Input) and not isinstance(value, str):
            raise WorkflowError(nid, ctype, f"'{inp.id}' must be a string, got {value!r}")
        elif not isinstance(inp, (io.Combo.Input, io.Int.Input, io.Float.Input, io.Boolean.Input,
                                  io.String.Input)):
            raise WorkflowError(nid, ctype, f"input '{inp.id}' ({inp.get_io_type()}) must be linked, "
                                            f"got a literal {value!r}")

    # ------------------------------------------------------------------------------------------ execution
    def _order(self, prompt: dict[str, dict]) -> list[str]:
        targets = [nid for nid, n in prompt.items() if self.schemas[n["class_type"]].is_output_node]
        if not targets:
            raise WorkflowError(None, None, "the prompt has no output node")
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(nid: str) -> None:
            if state.get(nid) == 2:
                return
            if state.get(nid) == 1:
                raise WorkflowError(nid, prompt[nid]["class_type"], "the graph has a cycle through this node")
            state[nid] = 1
            for v in prompt[nid].get("inputs", {}).values():
                if _is_link(v):
                    visit(v[0])
            state[nid] = 2
            order.append(nid)

        for t in sorted(targets, key=lambda s: (len(s), s)):
            visit(t)
        return order

    def run(self, prompt: dict[str, dict]) -> RunResult:
        self.validate(prompt)
        result = RunResult(order=self._order(prompt))
        is_list: dict[str, list[bool]] = {}
        for nid in result.order:
            node = prompt[nid]
            ctype = node["class_type"]
            schema = self.schemas[ctype]
            cls = self.classes[ctype]
            kwargs, listed = {}, set()
            for name, value in node.get("inputs", {}).items():
                if _is_link(value):
                    src, idx = value
                    kwargs[name] = result.outputs[src][idx]
                    if is_list[src][idx]:
                        listed.add(name)
                else:
                    kwargs[name] = value
            try:
                outs, ui = self._execute(cls, schema, kwargs, listed)
            except WorkflowError:
                raise
            except Exception as exc:  # reported with the node id, like ComfyUI's execution error
                raise WorkflowError(nid, ctype, f"{type(exc).__name__}: {exc}") from exc
            result.outputs[nid] = outs
            is_list[nid] = [o.is_output_list or bool(listed and not schema.is_input_list) for o in schema.outputs]
            if ui:
                result.ui[nid] = ui
        return result

    @staticmethod
    def _call(cls, kwargs) -> tuple[tuple, dict | None]:
        out = cls.execute(**kwargs)
        if not isinstance(out, io.NodeOutput):
            raise TypeError(f"execute returned {type(out).__name__}, not io.NodeOutput")
        ui = out.ui.as_dict() if hasattr(out.ui, "as_dict") else out.ui
        return tuple(out.args), ui

    def _execute(self, cls, schema, kwargs, listed) -> tuple[tuple, dict | None]:
        if schema.is_input_list:
            return self._call(cls, {k: (v if k in listed else [v]) for k, v in kwargs.items()})
        if not listed:
            return self._call(cls, kwargs)
        n = max(len(kwargs[k]) for k in listed)
        per_item, uis = [], []
        for i in range(n):
            item = {k: (v[min(i, len(v) - 1)] if k in listed else v) for k, v in kwargs.items()}
            args, ui = self._call(cls, item)
            per_item.append(args)
            if ui:
                uis.append(ui)
        outs = tuple(list(col) for col in zip(*per_item)) if per_item and per_item[0] else ()
        merged: dict = {}
        for ui in uis:
            for k, v in ui.items():
                merged.setdefault(k, [])
                merged[k] += list(v) if isinstance(v, (list, tuple)) else [v]
        return outs, merged or None


def load_prompt(path_or_dict: str | Path | dict) -> dict[str, dict]:
    if isinstance(path_or_dict, dict):
        return path_or_dict
    return json.loads(Path(path_or_dict).read_text())
