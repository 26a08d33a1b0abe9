from django.db import models


class MachineKind(models.TextChoices):
    VM = "vm", "Virtual machine"
    PHYSICAL = "physical", "Physical machine"


class Platform(models.TextChoices):
    VSPHERE = "vsphere", "VMware vSphere"
    HYPERV = "hyperv", "Microsoft Hyper-V"
    AGENT = "agent", "Agent"
