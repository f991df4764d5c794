"""The EHR's scheduling feed: HL7v2 SIU messages over HTTPS (signed) or MLLP (TLS client certificates).

- fields.py: dates, durations, telephone numbers, languages of single fields.
- parse.py: ER7 text -> `ParsedMessage` (envelope + `SchedulingMessage`), or a precise error.
- signature.py: the X-HL7-Signature check against the organization's uploaded certificate.
- ack.py: the HL7 ACK answered for every message.
- ingest.py: `ingest_message`, the one entry point both transports call.
- views.py, mllp.py: the two transports.
"""

import hl7.containers
import hl7.util

# python-hl7 logs a field's whole content when it meets an escape sequence it does
# not know; a field is PHI, so its loggers stay silent whichever module is imported.
# settings.LOGGING silences them too, and that survives logging being set up again.
hl7.util.logger.disabled = True
hl7.containers.logger.disabled = True
