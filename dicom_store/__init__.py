"""dicom_store: the DICOM archive (blob store, SQL index, DICOMweb, DIMSE) and result writers."""
