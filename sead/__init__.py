"""sead: SEAD-style multi-teacher ensemble knowledge distillation on GLUE and SuperGLUE."""

__version__ = "0.1.0"
