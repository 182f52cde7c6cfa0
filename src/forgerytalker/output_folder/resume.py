"""The resume rule every command follows: finished work in an output folder is kept only for a run with the same
settings (what its outputs depend on: options, input fingerprints, the model's weights), and a run with other
settings is refused naming each setting that differs, as `name: earlier -> now`.

Each command records its settings its own way (evaluate's unfinished-run state, analyze's `run.json`, training's
`training_args.json`, synthesize's sample parameters) and compares them here.
"""

from __future__ import annotations

import reprlib
from collections.abc import Collection, Mapping

_SHOWN = reprlib.Repr()
_SHOWN.maxstring = 48  # fingerprints and paths: enough to tell them apart in a message
_SHOWN.maxother = 48


def changed_settings(
    earlier: Mapping, now: Mapping, *, ignore: Collection[str] = (), only_recorded: bool = False
) -> list[str]:
    """`"name: earlier -> now"` for each setting that differs (sorted by name), values shortened for messages.

    Args:
        earlier: the settings recorded by the run that wrote the folder.
        now: this run's.
        ignore: settings a resumed run may change (they change none of the outputs kept).
        only_recorded: compare only settings `earlier` records (a later version may add settings that an earlier
            run did not know, at their defaults).
    """
    names = set(earlier) & set(now) if only_recorded else set(earlier) | set(now)
    return [
        f"{name}: {_SHOWN.repr(earlier.get(name))} -> {_SHOWN.repr(now.get(name))}"
        for name in sorted(names - set(ignore))
        if earlier.get(name) != now.get(name)
    ]


__all__ = ["changed_settings"]
