"""The ``method`` config section: a tagged union over the entries of ``METHODS``."""

from __future__ import annotations

from dataclasses import dataclass

from tagless.config_io import TaggedUnion


@dataclass
class MethodConfig(TaggedUnion):
    """Base of every method's config; ``name`` picks the method, the other keys are its own."""

    name: str = "moco"

    kind = "method"

    @classmethod
    def variants(cls) -> dict[str, type]:
        from tagless.methods import METHODS

        return {name: method.Config for name, method in METHODS.items()}
