"""Failure notifications of scheduled runs, through Prefect's notification blocks."""

import logging

from components.errors import KilnError
from pipelines.core.env import find_root
from pipelines.core.params import NotifyConfig, load


def notify(cfg: NotifyConfig, subject: str, body: str) -> str:
    """Through a Prefect notification block; with none configured, a log line."""
    logger = logging.getLogger("kiln.retrain")
    if not (cfg.apprise_url or cfg.block):
        logger.warning("%s (no retrain.notify configured, so this log line is the notification)", subject)
        return "log line"
    from prefect.blocks.core import Block
    from prefect.blocks.notifications import AppriseNotificationBlock

    try:
        block = AppriseNotificationBlock(url=cfg.apprise_url) if cfg.apprise_url else Block.load(cfg.block)
        block.notify(body=body, subject=subject)
    except Exception as err:  # noqa: BLE001 - a notification that fails must not hide the failure it reports
        logger.error("notification through %s failed: %s", cfg.block or "retrain.notify.apprise_url", err)
        return f"failed: {err}"
    return cfg.block or "apprise"


def on_failure(_flow, _flow_run, state) -> None:
    """Prefect's failure and crash hook: the notification goes out however the run ended."""
    try:
        cfg = load(find_root() / "params.yaml").retrain.notify
    except KilnError:
        cfg = NotifyConfig(apprise_url=None, block=None)  # params.yaml unreadable: a log line
    data = state.result(raise_on_failure=False)
    body = data.get("markdown") if isinstance(data, dict) else None
    notify(cfg, f"Kiln retrain failed: {state.message}"[:250], body or str(state.message))
