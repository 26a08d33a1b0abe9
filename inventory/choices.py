from django.db import models


class MachineKind(models.TextChoices):
    VM = "vm", "Virtual machine"
    PHYSICAL = "physical", "Physical machine"


class Platform(models.TextChoices):
    VSPHERE = "vsphere", "VMware vSphere"
    HYPERV = "hyperv", "Microsoft Hyper-V"
    AGENT = "agent", "Agent"


class SourceKind(models.TextChoices):
    VCENTER = "vcenter", "VMware vCenter"
    ESXI = "esxi", "VMware ESXi host"
    HYPERV = "hyperv", "Microsoft Hyper-V host or cluster"

    @property
    def platform(self) -> str:
        return Platform.HYPERV if self is SourceKind.HYPERV else Platform.VSPHERE


class SourceState(models.TextChoices):
    NEW = "new", "Not discovered yet"
    OK = "ok", "Discovered"
    FAILED = "failed", "Last discovery failed"


class DiscoveryState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class DiscoveryTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "On demand"
    WATCH = "watch", "Watch (re)connected"


class WatchState(models.TextChoices):
    OFF = "off", "Not watched"
    CONNECTING = "connecting", "Connecting"
    WATCHING = "watching", "Watching live"
    RETRYING = "retrying", "Lost; retrying"


class HyperVTransport(models.TextChoices):
    NTLM = "ntlm", "NTLM"
    KERBEROS = "kerberos", "Kerberos"
    CREDSSP = "credssp", "CredSSP"
    BASIC = "basic", "Basic (HTTPS only)"


class ChangeKind(models.TextChoices):
    DISCOVERED = "discovered", "Discovered"
    RENAMED = "renamed", "Renamed"
    MOVED = "moved", "Moved"
    CHANGED = "changed", "Changed"
    GONE = "gone", "Gone"
    RETURNED = "returned", "Returned"
    PROTECTION = "protection", "Protection changed"
    AGENT = "agent", "Agent"
