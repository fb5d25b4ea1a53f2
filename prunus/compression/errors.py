"""prunus' error types, shared by both frameworks.

Bad input (a config entry, a mask, an argument) raises the built-in ``TypeError`` or
``ValueError`` with a one-line message naming what was wrong, before anything changes.
A bad config (``config_list``, ``WeightPruningConfig``, YAML) raises
:class:`ConfigValueError` / :class:`ConfigTypeError`, which are also ``schema.SchemaError``:
NNI validated ``config_list`` with ``schema`` and its users catch ``SchemaError``.
Calling things in the wrong order raises ``RuntimeError``. A speedup that cannot be done
raises :class:`SpeedupError`, with the user's model unchanged.
"""


from schema import SchemaError


class PrunusError(Exception):
    """Base class of the errors prunus defines itself.

    Example::

        try:
            small = speedup(model, x, masks)
        except PrunusError as error:      # any error prunus defines (SpeedupError, ...)
            print(error)
    """


class ConfigValueError(PrunusError, SchemaError, ValueError):
    """A config value breaks its rule (or a key is unknown); catchable as ``ValueError``
    and as ``schema.SchemaError``, with the same one-line message.

    Example::

        try:
            LevelPruner(model, [{'sparsity': 1.5, 'op_types': ['Linear']}])
        except ConfigValueError as error:   # also a ValueError and a SchemaError
            print(error)   # config_list[0]['sparsity'] must be a number in [0, 1); got 1.5.
    """

    def __init__(self, message: str):
        SchemaError.__init__(self, message)


class ConfigTypeError(PrunusError, SchemaError, TypeError):
    """A config value has the wrong type; catchable as ``TypeError`` and as
    ``schema.SchemaError``, with the same one-line message.

    Example::

        try:
            LevelPruner(model, [{'sparsity': '0.5', 'op_types': ['Linear']}])
        except ConfigTypeError as error:    # also a TypeError and a SchemaError
            print(error)
    """

    def __init__(self, message: str):
        SchemaError.__init__(self, message)


class SpeedupError(PrunusError, RuntimeError, ValueError):
    """A speedup could not be done (a layer or operation it cannot handle, a result that
    would not compute what the masked model did); the model given to it is unchanged.

    One class for PyTorch and Keras. It is a ``RuntimeError`` (what the PyTorch speedup
    raised) and a ``ValueError`` (what the Keras speedup raised), so handlers written for
    either keep working.

    Example::

        try:
            small = speedup(model, x, masks)
        except SpeedupError as error:
            print(error)        # names the layer or operation; model is unchanged
    """
