; Clinic2Cloud - Inno Setup 6 script for a per-machine installation.
;
; Build (after `python -m PyInstaller --noconfirm installer/clinic2cloud.spec`):
;   iscc /DAppVersion=0.1.0 installer\windows\clinic2cloud.iss
;   -> dist\Clinic2Cloud-Setup-0.1.0.exe
;
; Silent deployment (Intune, SCCM, GPO, PDQ ...), as SYSTEM or an administrator:
;   Clinic2Cloud-Setup-0.1.0.exe /VERYSILENT /SUPPRESSMSGBOXES /NORESTART /CONFIG="\\srv\it\c2c\config.toml"
;   optional: /LOG="C:\Windows\Temp\clinic2cloud-setup.log"  /NOAUTOSTART
; Silent removal (keeps every user's ledger, quarantine and logs, and the site config):
;   "C:\Program Files\Clinic2Cloud\unins000.exe" /VERYSILENT /SUPPRESSMSGBOXES /NORESTART
;   add /PURGE to also delete them (the audit trail of what left the machine - think twice).
;
; What it does:
;   * installs the one-folder application in {autopf}\Clinic2Cloud (C:\Program Files);
;   * /CONFIG=<file> copies a site configuration to the machine-wide location that the agent
;     reads first, C:\ProgramData\Clinic2Cloud\config.toml (see agent/paths.py), readable by
;     users, writable by administrators only - so its [policy] locked keys hold;
;   * starts the agent at every user's login: value "Clinic2Cloud" under
;     HKLM\Software\Microsoft\Windows\CurrentVersion\Run, running the windowed
;     clinic2cloudw.exe (no console window);
;   * adds clinic2cloud.exe to the machine PATH so `clinic2cloud doctor` works in any shell.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\clinic2cloud"
#endif
#define AppName "Clinic2Cloud"
#define AppExe "clinic2cloud.exe"
#define AppExeW "clinic2cloudw.exe"

[Setup]
; A fixed AppId: upgrades replace the installed version instead of adding a second one.
AppId={{6E0C7D8B-2F4A-4C1E-9B57-C2C0C10D0001}
AppName={#AppName}
AppVersion={#AppVersion}
AppPublisher=Clinic2Cloud
AppPublisherURL=https://example.org/clinic2cloud
VersionInfoVersion={#AppVersion}
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
DisableDirPage=auto
; Per machine: Program Files, HKLM, ProgramData. Never falls back to a per-user install.
PrivilegesRequired=admin
PrivilegesRequiredOverridesAllowed=
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir=..\..\dist
OutputBaseFilename=Clinic2Cloud-Setup-{#AppVersion}
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName} {#AppVersion}
; The agent may be running in several user sessions: close it (Restart Manager) rather
; than ask for a reboot; /NORESTART forbids the reboot anyway.
CloseApplications=force
RestartApplications=no
ChangesEnvironment=yes
SetupLogging=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs
; Site files named on the command line (external: read at install time, from the path
; given, or relative to the folder holding the setup program):
;   /CONFIG=<file>  -> config.toml     the machine-wide configuration
;   /SECRET=<file>  -> target.secret   Azure SAS / connection string ([target] secret_file)
;   /SITEKEY=<file> -> site.key        the site secret shared by a site ([site] secret_file)
Source: "{code:ParamFile|CONFIG}"; DestDir: "{commonappdata}\{#AppName}"; \
  DestName: "config.toml"; Flags: external ignoreversion uninsneveruninstall; \
  Check: HasParam('CONFIG')
Source: "{code:ParamFile|SECRET}"; DestDir: "{commonappdata}\{#AppName}"; \
  DestName: "target.secret"; Flags: external ignoreversion uninsneveruninstall; \
  Check: HasParam('SECRET')
Source: "{code:ParamFile|SITEKEY}"; DestDir: "{commonappdata}\{#AppName}"; \
  DestName: "site.key"; Flags: external ignoreversion uninsneveruninstall; \
  Check: HasParam('SITEKEY')
Source: "..\config.example.toml"; DestDir: "{commonappdata}\{#AppName}"; \
  DestName: "config.example.toml"; Flags: ignoreversion

[Dirs]
Name: "{commonappdata}\{#AppName}"; Flags: uninsneveruninstall

[Registry]
; Autostart for every user at login (HKLM Run), removed by the uninstaller.
Root: HKLM; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueType: string; \
  ValueName: "{#AppName}"; ValueData: """{app}\{#AppExeW}"" run"; \
  Flags: uninsdeletevalue; Check: WantAutostart
; clinic2cloud on the machine PATH.
Root: HKLM; Subkey: "SYSTEM\CurrentControlSet\Control\Session Manager\Environment"; \
  ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; \
  Check: NeedsAddPath(ExpandConstant('{app}'))

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExeW}"; Parameters: "run"

[Run]
; Users read the machine-wide folder; only administrators and SYSTEM change it. Inheritance
; is cut because ProgramData lets every user create files, and a user-created config.toml
; there would be taken for IT's policy.
Filename: "{sys}\icacls.exe"; \
  Parameters: """{commonappdata}\{#AppName}"" /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F *S-1-5-32-544:(OI)(CI)F *S-1-5-32-545:(OI)(CI)RX"; \
  Flags: runhidden waituntilterminated; StatusMsg: "Securing the configuration folder..."
; Interactive installs only: start the tray agent for the person installing.
Filename: "{app}\{#AppExeW}"; Parameters: "run"; Description: "Start {#AppName} now"; \
  Flags: nowait postinstall skipifsilent runasoriginaluser

[UninstallRun]
; Stop every running agent (all sessions) before the files go; they resume from the ledger.
Filename: "{sys}\taskkill.exe"; Parameters: "/F /T /IM {#AppExeW}"; Flags: runhidden; \
  RunOnceId: "StopAgentW"
Filename: "{sys}\taskkill.exe"; Parameters: "/F /T /IM {#AppExe}"; Flags: runhidden; \
  RunOnceId: "StopAgent"

[UninstallDelete]
Type: filesandordirs; Name: "{app}\_internal"

[Code]
function HasParam(Name: string): Boolean;
begin
  Result := ExpandConstant('{param:' + Name + '|}') <> '';
end;

// The file named by /NAME=<path>: absolute, or relative to the setup program's folder
// (where Intune and SCCM unpack the package with its site files).
function ParamFile(Name: string): string;
begin
  Result := ExpandConstant('{param:' + Name + '|}');
  if (Result <> '') and (ExtractFileDrive(Result) = '') then
    Result := AddBackslash(ExpandConstant('{src}')) + Result;
end;

function WantAutostart(): Boolean;
begin
  Result := Pos('/NOAUTOSTART', Uppercase(GetCmdTail())) = 0;
end;

function NeedsAddPath(Dir: string): Boolean;
var
  Path: string;
begin
  if not RegQueryStringValue(HKLM, 'SYSTEM\CurrentControlSet\Control\Session Manager\Environment',
    'Path', Path) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';') = 0;
end;

function InitializeSetup(): Boolean;
var
  Names: array of string;
  I: Integer;
  F: string;
begin
  Result := True;
  SetArrayLength(Names, 3);
  Names[0] := 'CONFIG';
  Names[1] := 'SECRET';
  Names[2] := 'SITEKEY';
  // A deployment that names a site file which is not there must fail loudly (setup exit
  // code 1 in Intune/SCCM), not install an agent that silently runs on defaults.
  for I := 0 to GetArrayLength(Names) - 1 do
  begin
    F := ParamFile(Names[I]);
    if (F <> '') and not FileExists(F) then
    begin
      Log('Clinic2Cloud: /' + Names[I] + ' file not found: ' + F);
      SuppressibleMsgBox('The file ' + F + ' (/' + Names[I] + ') does not exist.',
        mbCriticalError, MB_OK, IDOK);
      Result := False;
      exit;
    end;
  end;
end;

procedure RemovePathEntry(Dir: string);
var
  Path: string;
  P: Integer;
begin
  if not RegQueryStringValue(HKLM, 'SYSTEM\CurrentControlSet\Control\Session Manager\Environment',
    'Path', Path) then
    exit;
  P := Pos(';' + Uppercase(Dir), Uppercase(Path));
  if P > 0 then
  begin
    Delete(Path, P, Length(Dir) + 1);
    RegWriteExpandStringValue(HKLM,
      'SYSTEM\CurrentControlSet\Control\Session Manager\Environment', 'Path', Path);
  end;
end;

// Per-user state lives in each profile (platformdirs): %LOCALAPPDATA%\Clinic2Cloud holds
// the ledger, quarantine, renders, keys and logs. Only /PURGE removes it, for every profile.
procedure PurgeUserData();
var
  Users, Profile: string;
  FindRec: TFindRec;
begin
  Users := ExpandConstant('{%SystemDrive|C:}') + '\Users';
  if FindFirst(Users + '\*', FindRec) then
  try
    repeat
      if (FindRec.Attributes and FILE_ATTRIBUTE_DIRECTORY <> 0) and
         (FindRec.Name <> '.') and (FindRec.Name <> '..') then
      begin
        Profile := Users + '\' + FindRec.Name;
        DelTree(Profile + '\AppData\Local\Clinic2Cloud', True, True, True);
        DelTree(Profile + '\AppData\Roaming\Clinic2Cloud', True, True, True);
      end;
    until not FindNext(FindRec);
  finally
    FindClose(FindRec);
  end;
  DelTree(ExpandConstant('{commonappdata}\{#AppName}'), True, True, True);
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usPostUninstall then
  begin
    RemovePathEntry(ExpandConstant('{app}'));
    if Pos('/PURGE', Uppercase(GetCmdTail())) > 0 then
    begin
      Log('Clinic2Cloud: /PURGE - removing configuration, ledgers, quarantine and logs');
      PurgeUserData();
    end
    else
      Log('Clinic2Cloud: keeping configuration, ledgers, quarantine and logs (no /PURGE)');
  end;
end;
