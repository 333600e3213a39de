"""A stand-in for llama-cpp-python whose first decode kills the process, as an AMX build of llama.cpp does
on some Xeons: loading works, the first matrix multiply segfaults."""

import os
import signal


class Llama:
    def __init__(self, *args, **kwargs):
        pass

    def create_completion(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGSEGV)


def llama_print_system_info():
    return b"CPU : AVX512 = 1 | AMX_INT8 = 1 |"
