"""hl7: HL7 v2 orders in and ORU^R01 results out over MLLP, with a durable outbox."""
