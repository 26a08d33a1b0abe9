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
