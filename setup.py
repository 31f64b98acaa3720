"""Build the Cython extensions; OpenMP is used when a test compile with it succeeds.

Environment variables:
  GRUCY_NO_OPENMP=1   build without OpenMP (prange loops then run serially)
  GRUCY_DEBUG=1       turn Cython bounds/wraparound checks back on, -O0 -g
  GRUCY_NATIVE=1      add -march=native (not portable; off by default)
"""

import os
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("GRUCY_DEBUG", "") not in ("", "0")
NO_OPENMP = os.environ.get("GRUCY_NO_OPENMP", "") not in ("", "0")
NATIVE = os.environ.get("GRUCY_NATIVE", "") not in ("", "0")

OPENMP_TEST = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def _openmp_works(compiler):
    """True when this compiler can build and link a tiny OpenMP program."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objs, os.path.join(tmp, "omp_test"),
                                     extra_postargs=["-fopenmp"])
        except Exception:  # any compile or link failure means: no OpenMP
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        use_openmp = not NO_OPENMP and _openmp_works(self.compiler)
        if NO_OPENMP:
            print("grucy: OpenMP disabled by GRUCY_NO_OPENMP", file=sys.stderr)
        elif not use_openmp:
            print("grucy: OpenMP test compile failed; building without OpenMP",
                  file=sys.stderr)
        for ext in self.extensions:
            if use_openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()


# -fno-trapping-math lets gcc turn the selects of the fast float32 exp/tanh
# (_fastmath.h) into vector blends; it changes no results (no reassociation), it only
# drops the promise that FP exceptions trap at the exact operation.
compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math"]
if NATIVE:
    compile_args.append("-march=native")

extensions = [
    Extension(
        "grucy._gru",
        ["src/grucy/_gru.pyx"],
        include_dirs=[np.get_include(), "src/grucy"],
        depends=["src/grucy/_fastmath.h", "src/grucy/_gru_rows.h", "src/grucy/_pgemm.h", "src/grucy/_pool.h",
                 "src/grucy/_blas.pxd"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=list(compile_args),
        extra_link_args=[],
    ),
]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives),
    cmdclass={"build_ext": BuildExt},
)
