"""Builds esockets._esockets: the engine's C++ sources (../engine/**/*.cpp) and the pybind11
binding compiled straight into one extension module, two files at a time.

Why not CMake: the extension needs nothing from the CMake build but the sources and two include
directories (include/, engine/; Boost.Lockfree is header-only, from libboost-dev), so plain
setuptools builds it offline with Debian's setuptools and pybind11 and no cmake at install time.
Objects and the egg-info go to ../build/python-setuptools (git-ignored), so python/ stays clean
and an unchanged tree is not recompiled on the next install.
"""

import glob
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ENGINE = os.path.join(ROOT, "engine")
INCLUDE = os.path.join(ROOT, "include")
if not os.path.isfile(os.path.join(INCLUDE, "esockets", "server.hpp")):
    sys.exit(
        "esockets: the engine sources are not at %s: install from an esockets checkout "
        "(pip install python/ from the repository root)" % ROOT
    )

BUILD = os.path.join(ROOT, "build", "python-setuptools")
os.makedirs(BUILD, exist_ok=True)
JOBS = max(1, int(os.environ.get("ESOCKETS_BUILD_JOBS", "2")))

sources = [os.path.join(HERE, "src", "esockets", "_esockets.cpp")]
sources += sorted(glob.glob(os.path.join(ENGINE, "**", "*.cpp"), recursive=True))
depends = sorted(
    glob.glob(os.path.join(ENGINE, "**", "*.hpp"), recursive=True)
    + glob.glob(os.path.join(INCLUDE, "esockets", "*.hpp"))
) + [os.path.abspath(__file__)]


def _parallel_compile(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                      extra_preargs=None, extra_postargs=None, depends=None):
    """CCompiler.compile with JOBS compilers at once (distutils compiles one file at a time)."""
    macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs)
    cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)

    # An object newer than its source and every header (depends) is reused: editing one .cpp
    # recompiles that file only; editing a header recompiles everything.
    newest_dep = max((os.path.getmtime(d) for d in (depends or []) if os.path.exists(d)), default=0)

    def one(obj):
        src, ext = build[obj]
        if os.path.exists(obj):
            t = os.path.getmtime(obj)
            if t > os.path.getmtime(src) and t > newest_dep:
                return
        self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

    with ThreadPoolExecutor(JOBS) as pool:
        list(pool.map(one, objects))
    return objects


class BuildExt(build_ext):
    def build_extensions(self):
        self.compiler.compile = _parallel_compile.__get__(self.compiler)
        super().build_extensions()


ext = Pybind11Extension(
    "esockets._esockets",
    sources,
    include_dirs=[INCLUDE, ENGINE],
    depends=depends,
    cxx_std=20,
    # Pybind11Extension adds -fvisibility=hidden and -g0 (Debian's CFLAGS carry -g).
    extra_compile_args=["-O2", "-pthread"],
    extra_link_args=["-pthread"],
)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExt},
    options={
        "build": {"build_base": BUILD},
        "egg_info": {"egg_base": BUILD},
    },
    zip_safe=False,
)
