// Where dicom-microscopy-viewer finds its frame-decoder worker and codecs: our own static files.
window.PUBLIC_URL = "/";
window.PUBLIC_LIB_URL = "/static/viewer/dist/";
