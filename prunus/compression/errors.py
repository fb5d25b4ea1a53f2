"""prunus' error types, shared by both frameworks.

Bad input (a config entry, a mask, an argument) raises the built-in ``TypeError`` or
``ValueError`` with a one-line message naming what was wrong, before anything changes.
Calling things in the wrong order raises ``RuntimeError``. A speedup that cannot be done
raises :class:`SpeedupError`, with the user's model unchanged.
"""


class PrunusError(Exception):
    """Base class of the errors prunus defines itself.

    Example::

        try:
            small = speedup(model, x, masks)
        except PrunusError as error:      # any error prunus defines (SpeedupError, ...)
            print(error)
    """


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
