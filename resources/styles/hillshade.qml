<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis hasScaleBasedVisibilityFlag="0" minScale="1e+08" styleCategories="Symbology|Rendering" maxScale="0" version="3.22.16-Białowieża">
  <pipe-data-defined-properties>
    <Option type="Map">
      <Option type="QString" name="name" value=""/>
      <Option name="properties"/>
      <Option type="QString" name="type" value="collection"/>
    </Option>
  </pipe-data-defined-properties>
  <pipe>
    <provider>
      <resampling zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2" zoomedInResamplingMethod="nearestNeighbour" enabled="false"/>
    </provider>
    <rasterrenderer alphaBand="-1" type="singlebandgray" grayBand="1" nodataColor="" opacity="1" gradient="BlackToWhite">
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <contrastEnhancement>
        <minValue>1</minValue>
        <maxValue>255</maxValue>
        <algorithm>StretchToMinimumMaximum</algorithm>
      </contrastEnhancement>
      <rampLegendSettings maximumLabel="" prefix="" suffix="" minimumLabel="" orientation="2" useContinuousLegend="1" direction="0">
        <numericFormat id="basic">
          <Option type="Map">
            <Option type="QChar" name="decimal_separator" value=""/>
            <Option type="int" name="decimals" value="6"/>
            <Option type="int" name="rounding_type" value="0"/>
            <Option type="bool" name="show_plus" value="false"/>
            <Option type="bool" name="show_thousand_separator" value="true"/>
            <Option type="bool" name="show_trailing_zeros" value="false"/>
            <Option type="QChar" name="thousand_separator" value=""/>
          </Option>
        </numericFormat>
      </rampLegendSettings>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" invertColors="0" colorizeStrength="100" colorizeBlue="128" colorizeGreen="128" colorizeRed="255" grayscaleMode="0" colorizeOn="0"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
