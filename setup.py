"""Build the Cython extension grucy._gru.

The kernels run on grucy's own thread team (pthreads, src/grucy/_pool.h), so no OpenMP
is needed: the same build works with GCC, Clang and Apple clang.  Every SIMD kernel is
compiled for its instruction set by a target attribute and chosen when the module
loads, so a default build runs on any x86-64 (or ARM64) CPU.

Environment variables:
  GRUCY_DEBUG=1       turn Cython bounds/wraparound checks back on, -O0 -g
  GRUCY_NATIVE=1      add -march=native (not portable; off by default)
"""

import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("GRUCY_DEBUG", "") not in ("", "0")
NATIVE = os.environ.get("GRUCY_NATIVE", "") not in ("", "0")

# -fno-trapping-math lets the compiler turn the selects of the fast float32 exp/tanh
# (_fastmath.h) into vector blends; it changes no results (no reassociation).  FMA
# contraction is set where it matters, in the sources: on in the GEMM (_pgemm.h), off in
# the fused row passes (_gru_rows.h), whatever the default of the compiler.
compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math"]
if NATIVE:
    compile_args.append("-march=native")
link_args = [] if sys.platform == "win32" else ["-pthread"]

extensions = [
    Extension(
        "grucy._gru",
        ["src/grucy/_gru.pyx"],
        include_dirs=[np.get_include(), "src/grucy"],
        depends=["src/grucy/_fastmath.h", "src/grucy/_gru_rows.h", "src/grucy/_pgemm.h",
                 "src/grucy/_lowp.h", "src/grucy/_pool.h", "src/grucy/_blas.pxd"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args + link_args,
        extra_link_args=link_args,
    ),
]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
