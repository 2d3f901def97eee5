"""jaxalign: does on-policy distillation push a student toward correct answers or away from them?"""

try:  # written at install time from git (setuptools-scm): X.Y.Z.devN+gHASH names the commit
    from jaxalign._version import __version__
except ImportError:  # a source tree that was never installed
    __version__ = "0.1.0"
