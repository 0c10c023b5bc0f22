"""An app whose import fails with a multi-line message, as a settings check might."""

raise RuntimeError("cannot start:\nSETTING_X is not set")
