from django.db import models


class RuleAction(models.TextChoices):
    INCLUDE = "include", "Assign a policy"
    EXCLUDE = "exclude", "Exclude from protection"


class RuleMode(models.TextChoices):
    ASSIGN_ONLY = "assign_only", "Assign only (never takes a policy away)"
    ASSIGN_AND_REMOVE = "assign_and_remove", "Assign and remove (follows the rule)"


class AlertKind(models.TextChoices):
    UNPROTECTED = "unprotected", "Unprotected machine"
    DISCOVERY_FAILED = "discovery_failed", "Discovery failed"
    AGENT_OFFLINE = "agent_offline", "Agent offline"
    RUN_FAILED = "run_failed", "Backup failed"
    RPO_MISSED = "rpo_missed", "RPO missed"
    CBT_RESET = "cbt_reset", "Changed-block tracking reset"
    PROXY_OFFLINE = "proxy_offline", "Proxy offline"
    DUPLICATE_SOURCE = "duplicate_source", "Two sources report one vCenter instance"


class Severity(models.TextChoices):
    INFO = "info", "Information"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class BackupMode(models.TextChoices):
    AGENTLESS = "agentless", "Agentless (hypervisor snapshot)"
    AGENT = "agent", "Agent"


class DedupLocation(models.TextChoices):
    AGENT = "agent", "At the agent (source-side)"
    PROXY = "proxy", "At the proxy"
    CENTRAL = "central", "Central"


class RunState(models.TextChoices):
    QUEUED = "queued", "Queued"
    WAITING = "waiting", "Waiting for resources"
    RUNNING = "running", "Running"
    COMMITTING = "committing", "Committing"
    COMMITTED = "committed", "Committed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_RUN_STATES = (RunState.QUEUED, RunState.WAITING, RunState.RUNNING, RunState.COMMITTING)
FINAL_RUN_STATES = (RunState.COMMITTED, RunState.FAILED, RunState.CANCELLED)


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "On demand"
    RETRY = "retry", "Retry"


class ProtectionState(models.TextChoices):
    """What protection/states.py decides for a machine (protected means recoverable)."""

    PROTECTED = "protected", "Protected"
    AT_RISK = "at_risk", "At risk"
    WAITING = "waiting", "Waiting for first backup"
    UNPROTECTED = "unprotected", "Unprotected"
    EXCLUDED = "excluded", "Excluded"
