"""Build hooks: bundle libtcast.so and the tcast CLI into the package.

Metadata lives in pyproject.toml.  When the repository's build folder
(../build, or $TCAST_BUILD_DIR) has lib/libtcast.so and bin/tcast, they are
copied to tcast/_lib/ and tcast/_bin/, where tcast looks first, and the
wheel is tagged for this platform (the Python code itself works on any
Python 3.8+, hence the py3-none tag).  Without a build the package is pure
Python and finds the library through TCAST_LIB or the system.
"""
import os
import shutil
import stat
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
BUILD = Path(os.environ.get("TCAST_BUILD_DIR") or HERE.parent / "build")
NATIVE = [
    (BUILD / "lib" / "libtcast.so", "_lib/libtcast.so", 0o644),
    (BUILD / "bin" / "tcast", "_bin/tcast", 0o755),
]


def native_files():
    return [(src.resolve(), dst, mode) for src, dst, mode in NATIVE if src.exists()]


class BuildPy(build_py):
    def run(self):
        super().run()
        for src, dst, mode in native_files():
            out = Path(self.build_lib) / "tcast" / dst
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)  # resolves the libtcast.so symlink chain
            os.chmod(out, mode)
            print(f"bundling {src} as tcast/{dst}")


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return bool(native_files())


cmdclass = {"build_py": BuildPy}
try:
    from wheel.bdist_wheel import bdist_wheel

    class BdistWheel(bdist_wheel):
        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = not native_files()

        def get_tag(self):
            py, abi, plat = super().get_tag()
            if not self.root_is_pure:
                py, abi = "py3", "none"
            return py, abi, plat

    cmdclass["bdist_wheel"] = BdistWheel
except ImportError:
    pass

setup(cmdclass=cmdclass, distclass=BinaryDistribution)
