"""Synthetic PowerShell 4104 events in the XmlWinEventLog layout of real ones, for stream tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from xml.sax.saxutils import escape

WMIEXEC = "Invoke-WMIExec -Target 10.0.0.12 -Username admin -Hash F6F38B793DB6A94BA04A52F1D3EE92F0"
WMIEXEC_RULE = "0734bd21-2769-4972-a5f1-78bb1e011224"  # PowerShell Invoke-WmiExec Usage: matches it
WMIC_NODE_RULE = "272df6de-61f1-4784-877c-1fbc3e2d0838"  # Remote WMI Command Attempt
WMIMETHOD = (
    "Invoke-WmiMethod -ComputerName srv02 -Class Win32_Process -Name create -ArgumentList calc"
)
BENIGN = "Get-Process | Sort-Object CPU"

TEMPLATE = (
    "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
    "<Provider Name='Microsoft-Windows-PowerShell'"
    " Guid='{{a0c1853b-5c40-4b15-8766-3cf1c58f985a}}'/>"
    "<EventID>4104</EventID><Version>1</Version><Level>5</Level><Task>2</Task><Opcode>15</Opcode>"
    "<Keywords>0x0</Keywords><TimeCreated SystemTime='{time}'/><EventRecordID>{record}"
    "</EventRecordID><Correlation ActivityID='{{3f0c7a49-e4fd-0001-0094-0940fde4d701}}'/>"
    "<Execution ProcessID='5112' ThreadID='4912'/><Channel>Microsoft-Windows-PowerShell/Operational"
    "</Channel><Computer>{host}</Computer><Security UserID='S-1-5-21-4230534742-2542757381-"
    "3142984815-1111'/></System><EventData><Data Name='MessageNumber'>1</Data>"
    "<Data Name='MessageTotal'>1</Data><Data Name='ScriptBlockText'>{text}</Data>"
    "<Data Name='ScriptBlockId'>{block}</Data><Data Name='Path'>"
    "</Data></EventData></Event>"
)


def script_block(host: str, seconds: float, text: str, record: int) -> bytes:
    """Return one 4104 event of ``host`` at epoch ``seconds`` logging ``text``.

    The ScriptBlockId follows the text, as when the same script block runs again.
    """
    moment = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    block = uuid.uuid5(uuid.NAMESPACE_URL, text)
    return TEMPLATE.format(
        time=moment, record=record, host=host, text=escape(text), block=block
    ).encode()
