// The slide in dicom-microscopy-viewer over our own /dicomweb (the person's session reaches it):
// the pyramid of the VL Whole Slide Microscopy series, the cell outlines of the run's annotations
// coloured by class, and the AOI quality map as a second annotation layer.
"use strict";

async function showSlide(viewerInfo) {
  const box = document.getElementById("viewer");
  if (!window.dicomMicroscopyViewer || !window.DICOMwebClient || !viewerInfo) return null;
  const DMV = window.dicomMicroscopyViewer;
  const client = new window.DICOMwebClient.api.DICOMwebClient({ url: viewerInfo.dicomweb });
  const study = viewerInfo.study;
  const slideSeries = await client.searchForSeries({ studyInstanceUID: study, queryParams: { Modality: "SM" } });
  if (!slideSeries.length) return null;
  const seriesUID = slideSeries[0]["0020000E"].Value[0];
  const metadata = await client.retrieveSeriesMetadata({ studyInstanceUID: study, seriesInstanceUID: seriesUID });
  const volume = metadata
    .map((m) => new DMV.metadata.VLWholeSlideMicroscopyImage({ metadata: m }))
    .filter((image) => ["VOLUME", "THUMBNAIL"].includes(image.ImageType[2]));
  box.hidden = false;
  const viewer = new DMV.viewer.VolumeImageViewer({ client, metadata: volume });
  viewer.render({ container: box });
  for (const [uid, series] of [[viewerInfo.annotations, viewerInfo.annotations_series],
    [viewerInfo.aoi, viewerInfo.aoi_series]]) {
    if (!uid || !series) continue;
    try {
      const [item] = await client.retrieveInstanceMetadata({
        studyInstanceUID: study, seriesInstanceUID: series, sopInstanceUID: uid });
      const annotations = new DMV.metadata.MicroscopyBulkSimpleAnnotations({ metadata: item });
      viewer.addAnnotationGroups(annotations);
      for (const group of annotations.AnnotationGroupSequence) viewer.showAnnotationGroup(group.AnnotationGroupUID);
    } catch (error) {
      console.warn("annotations not shown", uid, error);
    }
  }
  // A click on an outline: the server finds the cell under the outline's centre (slide mm), the page shows it.
  box.addEventListener("dicommicroscopyviewer_roi_selected", async (event) => {
    const points = event.detail?.payload?.scoord3d?.graphicData;
    if (!Array.isArray(points) || !points.length || !Array.isArray(points[0])) return;
    const x = points.reduce((sum, p) => sum + p[0], 0) / points.length;
    const y = points.reduce((sum, p) => sum + p[1], 0) / points.length;
    try {
      const cell = await api("GET", `/api/cases/${encodeURIComponent(PAGE.accession)}/cells/at?x=${x}&y=${y}`);
      if (window.onSlideCell) window.onSlideCell(cell);
    } catch (error) {
      // an AOI tile or an area without a cell: nothing to show
    }
  });
  window.slideViewer = viewer; // for people's consoles and the browser tests
  box.dataset.ready = "true";
  return viewer;
}
