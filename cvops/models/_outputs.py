"""Output types of the models: frozen dataclasses that also behave as the tuple of their fields
(unpacking, indexing, len, _fields, as the namedtuples they replace), registered with
torch.export.register_dataclass so that exported programs returning them can be saved, loaded and
packaged by AOTInductor (torch.export cannot serialise a namedtuple's TreeSpec)."""

import dataclasses

import torch


def output_type(cls):
    """Class decorator: cls (with annotated fields) → a frozen, tuple-like, export-serialisable dataclass
    named "cvops.<ClassName>" in saved programs."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = tuple(field.name for field in dataclasses.fields(cls))

    def as_tuple(self):
        return tuple(getattr(self, name) for name in names)

    cls._fields = names
    cls.__iter__ = lambda self: iter(as_tuple(self))
    cls.__len__ = lambda self: len(names)
    cls.__getitem__ = lambda self, index: as_tuple(self)[index]
    torch.export.register_dataclass(cls, serialized_type_name=f"cvops.{cls.__name__}")
    return cls
