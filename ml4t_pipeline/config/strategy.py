"""The ``strategy`` section: a registry strategy (``TopN``) or a user's class."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from ml4t_pipeline.config._base import _NUMBER, MAX_BARS, _Strict
from ml4t_pipeline.config.specs import _check_numbers

if TYPE_CHECKING:
    import engine as engine_mod

_TOPN_DEFAULTS: dict[str, Any] = {"type": "TopN", "n": 25, "rebalance_every": 1, "weight": None}


class StrategyConfig(_Strict):
    """The strategy: a registry name (``TopN``) with its parameters, or a user's class.

    ``TopN`` holds the ``n`` symbols with the highest ``signal`` value, equal weight ``1/n`` of
    equity (or ``weight``), rebalancing every ``rebalance_every`` bars.

    Attributes
    ----------
    type : str
        Name in ``engine.STRATEGY_REGISTRY`` (``TopN``).
    signal : str
        The column the strategy ranks by; the timing check ``trades_entered_after_signal_
        available`` and the report's signal deciles use it (also for a user's class).
    n : int
        Symbols held, 1 to 10,000.
    rebalance_every : int
        Rebalance every k-th bar, 1 to 10,000.
    weight : float | None
        Fraction of equity per position, in (0, 1] (default ``1/n``).
    class_ : str | None
        YAML key ``class``: import path of a user strategy, ``package.module.ClassName`` or
        ``package.module:ClassName``. It must subclass :class:`engine.Strategy`; it is imported
        with :mod:`importlib` and built as ``Class(**params)``. TopN's own fields (``type``,
        ``n``, ``rebalance_every``, ``weight``) must then stay at their defaults. Naming a class
        runs its module's code: treat experiment files like code.
    params : dict
        Keyword arguments of the user's class (numbers finite, ``|x| <= 1e12``); only with
        ``class``.
    """

    type: str = "TopN"
    signal: str = "score"
    n: Annotated[int, _NUMBER, Field(ge=1, le=MAX_BARS)] = 25
    rebalance_every: Annotated[int, _NUMBER, Field(ge=1, le=MAX_BARS)] = 1
    weight: Annotated[float, _NUMBER, Field(gt=0, le=1)] | None = None
    class_: str | None = Field(None, alias="class", pattern=r"^[A-Za-z_][\w.]*([:.][A-Za-z_]\w*)$")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _class_or_registry(self) -> StrategyConfig:
        if self.class_ is None:
            if self.params:
                raise ValueError(
                    "params is only for a user strategy class (strategy.class); TopN takes "
                    "n, rebalance_every and weight directly"
                )
            return self
        clash = [k for k, default in _TOPN_DEFAULTS.items() if getattr(self, k) != default]
        if clash:
            raise ValueError(
                f"{clash} apply to the built-in TopN strategy, not to class {self.class_!r}; "
                "pass the class's arguments under strategy.params"
            )
        _check_numbers(self.params, "strategy.params", {})
        return self

    def engine_spec(self) -> dict[str, Any]:
        """Return the dict that :func:`engine.build_strategy` accepts (registry strategies).

        Raises
        ------
        ValueError
            For a user class (``class``), which has no registry spec; use :meth:`build`.
        """
        if self.class_ is not None:
            raise ValueError(f"strategy class {self.class_!r} has no registry spec; use build()")
        return self.model_dump(exclude_none=True, exclude={"class_", "params"})

    def build(self) -> engine_mod.Strategy:
        """Build the engine strategy (registry strategy, or the user's class with ``params``).

        Raises
        ------
        ValueError
            An import path that does not import, a class that does not subclass
            :class:`engine.Strategy`, or parameters the class refuses.
        """
        import engine

        if self.class_ is None:
            return engine.build_strategy(self.engine_spec())
        cls = import_strategy_class(self.class_)
        try:
            return cls(**self.params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"strategy class {self.class_!r} refused params: {exc}") from exc


def import_strategy_class(path: str) -> type[engine_mod.Strategy]:
    """Import ``package.module.ClassName`` (or ``package.module:ClassName``).

    Raises
    ------
    ValueError
        Module not importable, no such attribute, or not a subclass of :class:`engine.Strategy`.
    """
    import engine

    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"strategy class {path!r}: expected 'package.module.ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"strategy class {path!r}: cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(f"strategy class {path!r}: module {module_name!r} has no {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, engine.Strategy)):
        raise ValueError(
            f"strategy class {path!r} is {cls!r}, not a subclass of engine.Strategy "
            "(subclass it and override on_timestamp_batch or on_market_data)"
        )
    return cls
