"""PowerShell run on the Hyper-V host through WinRM. Each script prints one compressed JSON document.

The first line names the script and its version (the contract tests' WinRM server answers by it).
"""

PROBE = """# bulwark: probe v1
$ErrorActionPreference = 'Stop'
$os = Get-CimInstance Win32_OperatingSystem
[ordered]@{ Host = $env:COMPUTERNAME; OS = $os.Caption; Version = $os.Version;
  HyperV = [bool](Get-Command Get-VM -ErrorAction SilentlyContinue) } | ConvertTo-Json -Compress
"""

INVENTORY = """# bulwark: inventory v1
$ErrorActionPreference = 'Stop'
$nodes = @($env:COMPUTERNAME)
$clusterName = ''
if (Get-Command Get-Cluster -ErrorAction SilentlyContinue) {
  try {
    $clusterName = (Get-Cluster -ErrorAction Stop).Name
    $nodes = @(Get-ClusterNode -ErrorAction Stop | Where-Object { $_.State -eq 'Up' } | ForEach-Object { $_.Name })
  } catch { $clusterName = '' }
}
$vms = foreach ($node in $nodes) {
  foreach ($vm in Get-VM -ComputerName $node) {
    $disks = foreach ($drive in Get-VMHardDiskDrive -VM $vm) {
      $vhd = $null
      try { $vhd = Get-VHD -Path $drive.Path -ComputerName $node -ErrorAction Stop } catch { }
      [ordered]@{
        Path = $drive.Path; ControllerType = [string]$drive.ControllerType
        ControllerNumber = $drive.ControllerNumber; ControllerLocation = $drive.ControllerLocation
        Size = $(if ($vhd) { $vhd.Size } else { 0 }); VhdFormat = $(if ($vhd) { [string]$vhd.VhdFormat } else { '' })
        VhdType = $(if ($vhd) { [string]$vhd.VhdType } else { '' })
      }
    }
    [ordered]@{
      Id = [string]$vm.Id; Name = $vm.Name; State = [string]$vm.State; Notes = $vm.Notes
      Generation = $vm.Generation; Version = $vm.Version; ComputerName = $vm.ComputerName
      IsClustered = [bool]$vm.IsClustered; Path = $vm.Path
      Checkpoints = @(Get-VMSnapshot -VM $vm | ForEach-Object { $_.Name })
      IPAddresses = @($vm.NetworkAdapters | ForEach-Object { $_.IPAddresses })
      Disks = @($disks)
    }
  }
}
[ordered]@{ Host = $env:COMPUTERNAME; Cluster = $clusterName; Nodes = $nodes;
  OS = (Get-CimInstance Win32_OperatingSystem).Caption; VMs = @($vms) } | ConvertTo-Json -Depth 6 -Compress
"""


def _quote(value: str) -> str:
    """A PowerShell single-quoted string literal."""
    return "'" + value.replace("'", "''") + "'"


def checkpoint(vm_id: str, name: str, production: bool) -> str:
    """A checkpoint of the VM, and for each disk: the parent VHD(X) that now holds the checkpointed data, its
    share path (\\\\host\\share\\...), size, and the resilient change tracking id of the checkpoint."""
    return f"""# bulwark: checkpoint v1
$vmId = {_quote(vm_id)}; $name = {_quote(name)}; $production = ${str(production).lower()}
$ErrorActionPreference = 'Stop'
$vm = Get-VM -Id $vmId
Set-VM -VM $vm -CheckpointType $(if ($production) {{ 'ProductionOnly' }} else {{ 'Standard' }})
$checkpoint = Checkpoint-VM -VM $vm -SnapshotName $name -Passthru
$disks = foreach ($drive in Get-VMHardDiskDrive -VMSnapshot $checkpoint) {{
  $vhd = Get-VHD -Path $drive.Path
  $share = Get-SmbShare | Where-Object {{ $drive.Path.StartsWith($_.Path + '\\\\') }} | Select-Object -First 1
  $rct = Get-CimInstance -Namespace root\\virtualization\\v2 -ClassName Msvm_VirtualSystemSettingData |
    Where-Object {{ $_.ConfigurationID -eq $checkpoint.Id }} | Select-Object -ExpandProperty ResilientChangeTrackingIdentifiers -ErrorAction SilentlyContinue
  [ordered]@{{ Key = "$($drive.ControllerType):$($drive.ControllerNumber):$($drive.ControllerLocation)"; Path = $drive.Path
    Share = $(if ($share) {{ "\\\\$env:COMPUTERNAME\\$($share.Name)" + $drive.Path.Substring($share.Path.Length) }} else {{ '' }})
    Size = $vhd.Size; DiskIdentifier = [string]$vhd.DiskIdentifier; RctId = [string]($rct | Select-Object -First 1) }}
}}
[ordered]@{{ Checkpoint = [string]$checkpoint.Id; Production = $production; Disks = @($disks) }} | ConvertTo-Json -Depth 4 -Compress
"""


def changed_ranges(vm_id: str, checkpoint_id: str, disk_path: str, since_rct: str, offset: int) -> str:
    """Ranges changed since an RCT id, from `offset` on, at most one page (the host decides its size)."""
    return f"""# bulwark: changes v1
$vmId = {_quote(vm_id)}; $checkpointId = {_quote(checkpoint_id)}; $path = {_quote(disk_path)}; $since = {_quote(since_rct)}; $offset = {int(offset)}
$ErrorActionPreference = 'Stop'
$service = Get-CimInstance -Namespace root\\virtualization\\v2 -ClassName Msvm_ImageManagementService
$size = (Get-VHD -Path $path).Size
$result = Invoke-CimMethod -InputObject $service -MethodName GetVirtualDiskChanges -Arguments @{{
  Path = $path; LimitId = ''; TargetSnapshotId = $checkpointId; ChangeTrackingId = $since; StartingOffset = [uint64]$offset
  ByteLength = [uint64]($size - $offset) }}
if ($result.ReturnValue -ne 0) {{ throw "GetVirtualDiskChanges returned $($result.ReturnValue)" }}
[ordered]@{{ Offsets = @($result.ChangedByteOffsets); Lengths = @($result.ChangedByteLengths); Processed = $result.ProcessedByteLength; Size = $size }} | ConvertTo-Json -Compress
"""


def remove_checkpoint(vm_id: str, checkpoint_id: str) -> str:
    return f"""# bulwark: remove-checkpoint v1
$vmId = {_quote(vm_id)}; $checkpointId = {_quote(checkpoint_id)}
$ErrorActionPreference = 'Stop'
Get-VMSnapshot -VM (Get-VM -Id $vmId) | Where-Object {{ $_.Id -eq $checkpointId }} | Remove-VMSnapshot
@{{ Removed = $true }} | ConvertTo-Json -Compress
"""


def hook(stage: str, vm_id: str, body: str) -> str:
    """An admin's pre- or post-snapshot script, run on the Hyper-V host with the VM's id in $vmId. Its output
    is returned as text; a failure (an exception or a non-zero exit) fails the hook."""
    return f"""# bulwark: {stage}-script v1
$vmId = {_quote(vm_id)}
$ErrorActionPreference = 'Stop'
$output = & {{
{body}
}} 2>&1 | Out-String
if ($LASTEXITCODE -and $LASTEXITCODE -ne 0) {{ throw "exit code $LASTEXITCODE`n$output" }}
@{{ Output = $output }} | ConvertTo-Json -Compress
"""
