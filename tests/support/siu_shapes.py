"""SIU messages in the shapes real senders use, built per test (all values invented).

- **Epic** (v2.5.1): the appointment's contact serial number (CSN) in SCH-1 and SCH-2
  (`^EPIC`), and again as PV1-19 (visit number); TQ1 with start and end; SCH-9/10
  duration; MSH-4 the department's facility code, which differs between departments
  and between an appointment's messages when it is moved.
- **Oracle Health / Cerner** (v2.3 to 2.5): SCH-1 empty, the scheduling event ID in
  SCH-2; times in SCH-11 (TQ: `^^duration^start^end`) with UTC offsets, no TQ1;
  resources in AIS/AIG/AIL.
- **Generic interface engine** (Mirth, Rhapsody, Cloverleaf; v2.5 to 2.8): what the
  engine's channel maps; often a constant in SCH-1 (here the channel name `VC`) and the
  EHR's ID in SCH-2; TQ1 start and end plus a duration in SCH-9/10, sometimes in UCUM
  units (`s`, `min`, `h`, `d`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

EPIC, ORACLE, ENGINE = "epic", "oracle", "engine"


def siu(
    shape: str,
    *,
    trigger: str = "S12",
    control_id: str = "MSG-1",
    msh7: str = "20270105083015",
    appointment_id: str = "4000123456",
    patient: str = "E1234567",
    start: str = "20270112093000",
    end: str | None = None,  # default: 30 minutes after the start
    duration: tuple[str, str] = ("30", "MIN"),
    phone: str = "^PRN^CP^^1^415^5550123",
    facility: str = "NVH",
    offset: str = "-0600",
    tq1: bool = True,
) -> bytes:
    """One message with segments separated by CR, as an interface engine sends it."""
    amount, unit = duration
    if end is None:
        end = (datetime.strptime(start, "%Y%m%d%H%M%S") + timedelta(minutes=30)).strftime("%Y%m%d%H%M%S")
    if shape == EPIC:
        lines = [
            f"MSH|^~\\&|EPIC|{facility}|VCONNECT|VIRTUALCARE|{msh7}||SIU^{trigger}^SIU_S12|{control_id}|P|2.5.1"
            "|||AL|NE||8859/1",
            f"SCH|{appointment_id}^EPIC|{appointment_id}^EPIC|||||VIDEO^Video visit^EPICVT||{amount}|{unit}"
            f"|^^{amount}^{start}^{end}|||||1001^CARTER^AVERY||||1001^CARTER^AVERY|||||Booked",
            f"TQ1|1||||||{start}|{end}" if tq1 else "",
            f"PID|1||{patient}^^^EPI^MRN||QUINN^HARPER||19850314|F|||||{phone}||ENG^English^HL70296",
            f"PV1|1|O|NVH VIRTUAL MED^^^{facility}||||1001^CARTER^AVERY||||||||||||{appointment_id}",
            "RGS|1|A",
            f"AIS|1|A|VIDEO^Video visit^EPICVT|{start}|0|MIN|{amount}|{unit}",
        ]
    elif shape == ORACLE:
        lines = [
            f"MSH|^~\\&|CERNER|SOUTHLAKE|VCONNECT|VIRTUALCARE|{msh7}{offset}||SIU^{trigger}|{control_id}|P|2.3",
            f"SCH||{appointment_id}^CERNER||||FOLLOWUP^Follow-up|TELEHEALTH^Telehealth visit||{amount}|{unit}"
            f"|^^{amount}^{start}{offset}^{end}{offset}|||||ZZ9001^PATEL^SAM||||||||Booked",
            f"PID|1|{patient}^^^SLK^MRN|{patient}^^^SLK^MRN||MORALES^LUCIA||19920605|F|||||{phone}||SPA^Spanish",
            "PV1|1|O|SLK FAMILY MED^^^SOUTHLAKE",
            "RGS|1",
            "AIG|1|A|ZZ9001^PATEL^SAM|PROV^Provider",
            "AIL|1|A|SLK FAMILY MED^^^SOUTHLAKE|CLINIC",
        ]
    elif shape == ENGINE:
        lines = [
            f"MSH|^~\\&|RHAPSODY|LAKESIDE|VCONNECT|VIRTUALCARE|{msh7}||SIU^{trigger}^SIU_S12|{control_id}|P|2.6",
            f"SCH|VC|{appointment_id}|||||CONSULT^Consultation||{amount}|{unit}",
            f"TQ1|1||||||{start}|{end}" if tq1 else "",
            f"PID|1||{patient}^^^LAKESIDE^MR||ALVAREZ^MATEO||20010109|M|||||{phone}||en",
            "PV1|1|O|LKS TELEHEALTH^^^LAKESIDE",
            "RGS|1|A",
            f"AIS|1|A|CONSULT^Consultation|{start}",
        ]
    else:
        raise ValueError(shape)
    return "\r".join(line for line in lines if line).encode()
