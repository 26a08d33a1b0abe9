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


class Severity(models.TextChoices):
    INFO = "info", "Information"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"
