"""A stop request whose exception Python drops: the signal arrives while the garbage
collector runs a callback (as JAX's _xla_gc_callback does), where an exception raised by
the handler is printed as "Exception ignored in ..." and the program goes on."""

import gc
import os


def send_inside_gc_callback(signum: int) -> None:
    def callback(phase, info):
        if phase == "start":
            gc.callbacks.remove(callback)
            os.kill(os.getpid(), signum)
            sum(range(100))   # bytecodes after the kill: the handler runs here, inside the callback
    gc.callbacks.append(callback)
    gc.collect()
