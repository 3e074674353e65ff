"""Test double of ``comfy_api.latest._io``: the V3 schema classes with ComfyUI's constructor signatures.

Only what the pack uses is mirrored; ``as_dict`` produces the same keys as ComfyUI so ``tests`` can compare the
double's node info with a real server's ``/object_info``.
"""

from __future__ import annotations

from abc import ABC
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar


def prune_dict(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class _ComfyType(ABC):
    Type = Any
    io_type: str = None


def comfytype(io_type: str, **kwargs):
    def decorator(cls):
        if isinstance(cls, type) and issubclass(cls, _ComfyType):
            new_cls = cls
            if hasattr(new_cls, "Input"):
                new_cls.Input = type(new_cls.Input.__name__, (new_cls.Input,), {})
            if hasattr(new_cls, "Output"):
                new_cls.Output = type(new_cls.Output.__name__, (new_cls.Output,), {})
        else:
            new_cls = type(cls.__name__, (cls, ComfyTypeIO), {k: v for k, v in cls.__dict__.items()
                                                             if k not in ("__dict__", "__weakref__")})
        new_cls.io_type = io_type
        if getattr(new_cls, "Input", None) is not None:
            new_cls.Input.Parent = new_cls
        if getattr(new_cls, "Output", None) is not None:
            new_cls.Output.Parent = new_cls
        return new_cls
    return decorator


class _IO_V3:
    Parent: _ComfyType = None

    def __init__(self):
        pass

    @property
    def io_type(self):
        return self.Parent.io_type

    @property
    def Type(self):
        return self.Parent.Type


class Input(_IO_V3):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict=None, raw_link: bool = None, advanced: bool = None):
        super().__init__()
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}
        self.rawLink = raw_link
        self.advanced = advanced

    def as_dict(self):
        return prune_dict({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                           "lazy": self.lazy, "rawLink": self.rawLink, "advanced": self.advanced}) | prune_dict(
                               self.extra_dict)

    def get_io_type(self):
        return self.io_type


class WidgetInput(Input):
    # attribute -> ``as_dict`` key of a subclass's own fields (ComfyUI's names); Enum values are sent as values
    fields: ClassVar[dict[str, str]] = {}

    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: Any = None, socketless: bool = None, widget_type: str = None, force_input: bool = None,
                 extra_dict=None, raw_link: bool = None, advanced: bool = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def _init_widget(self, params: dict) -> None:
        """The shared body of the widget subclasses' constructors (``params`` is their ``locals()``): ComfyUI's
        subclasses pass the common arguments to ``WidgetInput`` and keep their own as attributes."""
        WidgetInput.__init__(self, params["id"], params["display_name"], params["optional"], params["tooltip"],
                             params["lazy"], params["default"], params["socketless"], None,
                             params.get("force_input"), params["extra_dict"], params["raw_link"], params["advanced"])
        for name in self.fields:
            setattr(self, name, params[name])

    def as_dict(self):
        own = {key: getattr(self, name) for name, key in self.fields.items()}
        return super().as_dict() | prune_dict({"default": self.default, "socketless": self.socketless,
                                               "widgetType": self.widget_type, "forceInput": self.force_input}) | \
            prune_dict({k: v.value if isinstance(v, Enum) else v for k, v in own.items()})

    def get_io_type(self):
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output(_IO_V3):
    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def as_dict(self):
        return prune_dict({"display_name": self.display_name, "tooltip": self.tooltip,
                           "is_output_list": self.is_output_list})

    def get_io_type(self):
        return self.io_type


class ComfyTypeI(_ComfyType):
    class Input(Input):
        ...


class ComfyTypeIO(ComfyTypeI):
    class Output(Output):
        ...


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        fields: ClassVar[dict[str, str]] = {"label_on": "label_on", "label_off": "label_off"}

        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: bool = None, label_on: str = None, label_off: str = None, socketless: bool = None,
                     force_input: bool = None, extra_dict=None, raw_link: bool = None, advanced: bool = None):
            self._init_widget(locals())


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        fields: ClassVar[dict[str, str]] = {"min": "min", "max": "max", "step": "step",
                                            "control_after_generate": "control_after_generate",
                                            "display_mode": "display"}

        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: int = None, min: int = None, max: int = None, step: int = None,
                     control_after_generate: bool = None, display_mode: NumberDisplay = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None,
                     advanced: bool = None):
            self._init_widget(locals())


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        fields: ClassVar[dict[str, str]] = {"min": "min", "max": "max", "step": "step", "round": "round",
                                            "display_mode": "display", "gradient_stops": "gradient_stops"}

        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: float = None, min: float = None, max: float = None, step: float = None,
                     round: float = None, display_mode: NumberDisplay = None, gradient_stops: list[dict] = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None,
                     advanced: bool = None):
            self._init_widget(locals())


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        fields: ClassVar[dict[str, str]] = {"multiline": "multiline", "placeholder": "placeholder",
                                            "dynamic_prompts": "dynamicPrompts"}

        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     multiline=False, placeholder: str = None, default: str = None, dynamic_prompts: bool = None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None, raw_link: bool = None,
                     advanced: bool = None):
            self._init_widget(locals())


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        Type = str
        fields: ClassVar[dict[str, str]] = {"options": "options", "control_after_generate": "control_after_generate",
                                            "image_folder": "image_folder"}

        def __init__(self, id: str, options: list[str] | list[int] | type[Enum] = None, display_name: str = None,
                     optional=False, tooltip: str = None, lazy: bool = None, default: str | int | Enum = None,
                     control_after_generate: bool = None, upload: UploadType = None, image_folder: FolderType = None,
                     remote=None, socketless: bool = None, extra_dict=None, raw_link: bool = None,
                     advanced: bool = None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            if isinstance(default, Enum):
                default = default.value
            self._init_widget(locals())
            self.multiselect = False
            self.upload = upload
            self.remote = remote

        def as_dict(self):
            upload = {self.upload.value: True} if self.upload is not None else {}
            return super().as_dict() | {"multiselect": self.multiselect} | upload

    class Output(Output):
        def __init__(self, id: str = None, display_name: str = None, options: list[str] = None,
                     tooltip: str = None, is_output_list=False):
            super().__init__(id, display_name, tooltip, is_output_list)
            self.options = options if options is not None else []


def Custom(io_type: str) -> type[ComfyTypeIO]:
    @comfytype(io_type=io_type)
    class CustomComfyType(ComfyTypeIO):
        ...
    return CustomComfyType


def _simple(io_type: str, name: str) -> type[ComfyTypeIO]:
    cls = type(name, (ComfyTypeIO,), {})
    return comfytype(io_type=io_type)(cls)


Image = _simple("IMAGE", "Image")
Mask = _simple("MASK", "Mask")
Latent = _simple("LATENT", "Latent")
Conditioning = _simple("CONDITIONING", "Conditioning")
Clip = _simple("CLIP", "Clip")
Vae = _simple("VAE", "Vae")
Model = _simple("MODEL", "Model")
ControlNet = _simple("CONTROL_NET", "ControlNet")
UpscaleModel = _simple("UPSCALE_MODEL", "UpscaleModel")
AnyType = _simple("*", "AnyType")


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class PriceBadge:
    """API-node price badge (the pack has no API nodes; present so the Schema fields match ComfyUI's)."""


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    search_aliases: list[str] = field(default_factory=list)
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_dev_only: bool = False
    is_api_node: bool = False
    price_badge: PriceBadge | None = None
    not_idempotent: bool = False
    enable_expand: bool = False
    accept_all_inputs: bool = False
    essentials_category: str | None = None
    has_intermediate_output: bool = False

    def validate(self):
        input_ids = [i.id for i in self.inputs] if self.inputs is not None else []
        output_ids = [o.id for o in self.outputs] if self.outputs is not None else []
        issues = []
        if len(set(input_ids)) != len(input_ids):
            issues.append(f"Input ids must be unique, but {[k for k, c in Counter(input_ids).items() if c > 1]} are not.")
        if len(set(output_ids)) != len(output_ids):
            issues.append(f"Output ids must be unique, but {[k for k, c in Counter(output_ids).items() if c > 1]} are not.")
        both = set(input_ids) & set(output_ids)
        if both:
            issues.append(f"Ids must be unique between inputs and outputs, but {both} are not.")
        if issues:
            raise ValueError("\n".join(issues))

    def finalize(self):
        if self.is_output_node:
            if self.hidden is None:
                self.hidden = []
            for h in (Hidden.prompt, Hidden.extra_pnginfo):
                if h not in self.hidden:
                    self.hidden.append(h)
        if self.outputs is not None:
            for i, output in enumerate(self.outputs):
                if output.id is None:
                    output.id = f"_{i}_{output.io_type}_"

    def get_v1_info(self, cls=None) -> dict:
        """The node's ``/object_info`` entry, built as ComfyUI's ``Schema.get_v1_info`` builds it."""
        inputs: dict = {"required": {}}
        for i in self.inputs or []:
            as_dict = i.as_dict()
            as_dict.pop("optional", None)
            inputs.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), as_dict)
        for h in self.hidden or []:
            inputs.setdefault("hidden", {})[h.name] = (h.value,)
        outs = self.outputs or []
        return {
            "input": inputs,
            "input_order": {k: list(v.keys()) for k, v in inputs.items()},
            "output": [o.io_type for o in outs],
            "output_is_list": [o.is_output_list for o in outs],
            "output_name": [o.display_name if o.display_name else o.io_type for o in outs],
            "output_tooltips": [o.tooltip if o.tooltip else None for o in outs],
            "name": self.node_id,
            "display_name": self.display_name,
            "category": self.category,
            "description": self.description,
            "output_node": self.is_output_node,
            "deprecated": self.is_deprecated,
            "experimental": self.is_experimental,
            "api_node": self.is_api_node,
        }


class NodeOutput:
    def __init__(self, *args: Any, ui=None, expand: dict = None, block_execution: str = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self):
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index) -> Any:
        return self.args[index]


class ComfyNode:
    """V3 node base: subclasses implement ``define_schema`` and ``execute`` as classmethods."""

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> Any:
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        return schema

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict:
        return cls.GET_SCHEMA().get_v1_info()
