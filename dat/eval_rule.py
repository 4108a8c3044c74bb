"""The one evaluation rule of the project, without torch: which settings an evaluation uses
(`recipe_for`), whether a checkpoint's stored numbers were made by it (`recipe_matches`) and which
device a checkpoint recorded (`recorded_device`). `dat.evaluate` evaluates by it; Table I and the
dashboard's Models page read stored numbers through it before torch has loaded."""

from __future__ import annotations

from dat.errors import UserError

# -- the one evaluation rule -------------------------------------------------------------------
# Every noisy number this project reports (training's final evaluation, `dat eval`, `dat table`,
# the dashboard's Models page) comes from this rule, so one model on one device gives one number:
#   * the R draws eta_1..eta_R come from torch.Generator().manual_seed(eval_seed), with the
#     profile's exact sampler (profile.sampler("full")), and the same R draws serve both splits;
#   * eval_seed is explicit and independent of the training seed (default DEFAULT_EVAL_SEED), so
#     every model is tested on the same R simulated chips (a paired design across models);
#   * R and the batch size default to the ones in the model's own config (eval_draws, eval_batch_size);
#   * every result records eval_seed, draws, batch size, device spec and profile hash.
DEFAULT_EVAL_SEED = 0


def recipe_for(config: dict, draws: int | None = None, eval_seed: int | None = None,
               batch_size: int | None = None) -> dict:
    """The evaluation settings for a model with resolved ``config`` (its checkpoint's ``config``):
    {"eval_seed", "draws", "batch_size"}; explicit values override the model's own."""
    config = config or {}
    recipe = {"eval_seed": DEFAULT_EVAL_SEED if eval_seed is None else eval_seed,
              "draws": int(config.get("eval_draws", 20)) if draws is None else draws,
              "batch_size": int(config.get("eval_batch_size", 512)) if batch_size is None else batch_size}
    for key, value in recipe.items():
        minimum = 0 if key == "eval_seed" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise UserError(f"Invalid {key}: expected an int >= {minimum}, found {value!r}")
    return recipe


def recipe_matches(metrics: dict, recipe: dict, device_spec: str | None = None,
                   profile_hash: str | None = None) -> bool:
    """True when stored ``metrics`` (a checkpoint's) were made by ``recipe`` (and, when given, under
    ``device_spec`` / the profile with ``profile_hash``), so they equal a fresh evaluation."""
    if not isinstance(metrics, dict) or metrics.get("eval_seed") != recipe["eval_seed"]:
        return False
    if metrics.get("eval_batch_size") != recipe["batch_size"]:
        return False
    for split in ("train", "test"):
        noisy = (metrics.get(split) or {}).get("noisy") or {}
        if noisy.get("draws") != recipe["draws"] or not isinstance(noisy.get("acc_per_draw"), list):
            return False
    if device_spec is not None and str(metrics.get("eval_device")) != str(device_spec):
        return False
    return profile_hash is None or metrics.get("eval_profile_hash") == profile_hash


def recorded_device(meta: dict, source: str, key: str = "eval") -> str:
    """The device a checkpoint was evaluated with (``key="eval"``) or trained with (``"train"``), as
    recorded in its metadata. Only preset names are accepted from a file: a path written in a file
    is never opened (the user passes it with --device)."""
    from dat.noise.crossbar import PRESETS

    config = meta.get("config") or {}
    metrics = meta.get("metrics") or {}
    spec = (metrics.get("eval_device") or config.get("eval_device") or config.get("device")) if key == "eval" \
        else config.get("device")
    if spec not in PRESETS:
        raise UserError(f"{source}: expected its recorded device to be a preset {sorted(PRESETS)}, found "
                         f"{spec!r}; a device path written in a file is never opened: name the device yourself "
                         f"(--device on the command line, the device choice on the dashboard)")
    return spec
