from django.db import models


class Role(models.TextChoices):
    """What a person does in Bulwark; scope (machine groups) narrows what they see."""

    ADMIN = "admin", "Backup admin"
    HELPDESK = "helpdesk", "Help-desk operator"
    OWNER = "owner", "Application owner"
    AUDITOR = "auditor", "Auditor"


# Roles that see every machine (read-only for the auditor); the others see only their machine groups.
GLOBAL_ROLES = frozenset({Role.ADMIN, Role.AUDITOR})


class CredentialKind(models.TextChoices):
    VSPHERE = "vsphere", "vCenter / ESXi"
    HYPERV = "hyperv", "Hyper-V (WinRM)"
    SMB = "smb", "SMB share"
    S3 = "s3", "S3 access key"
    REPOSITORY = "repository", "Repository passphrase"
    AGENT = "agent", "Agent enrolment"
    GUEST = "guest", "Guest OS login (scripts in VMs)"
