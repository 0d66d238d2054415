<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.16-Białowieża" maxScale="0" hasScaleBasedVisibilityFlag="0" minScale="1e+08" styleCategories="Symbology|Rendering">
  <pipe-data-defined-properties>
    <Option type="Map">
      <Option name="name" value="" type="QString"/>
      <Option name="properties"/>
      <Option name="type" value="collection" type="QString"/>
    </Option>
  </pipe-data-defined-properties>
  <pipe>
    <provider>
      <resampling enabled="false" maxOversampling="2" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour"/>
    </provider>
    <rasterrenderer band="1" nodataColor="" classificationMin="0" alphaBand="-1" opacity="1" type="singlebandpseudocolor" classificationMax="1">
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <rastershader>
        <colorrampshader clip="0" classificationMode="1" colorRampType="INTERPOLATED" maximumValue="1" minimumValue="0" labelPrecision="6">
          <colorramp name="[source]" type="gradient">
            <Option type="Map">
              <Option name="color1" value="0,0,4,255" type="QString"/>
              <Option name="color2" value="252,255,164,255" type="QString"/>
              <Option name="discrete" value="0" type="QString"/>
              <Option name="rampType" value="gradient" type="QString"/>
              <Option name="stops" value="0.0196078;2,2,12,255:0.0392157;5,4,23,255:0.0588235;10,7,34,255:0.0784314;16,9,45,255:0.0980392;22,11,57,255:0.117647;30,12,69,255:0.137255;38,12,81,255:0.156863;47,10,91,255:0.176471;56,9,98,255:0.196078;64,10,103,255:0.215686;73,11,106,255:0.235294;81,14,108,255:0.254902;89,16,110,255:0.27451;97,19,110,255:0.294118;105,22,110,255:0.313725;113,25,110,255:0.333333;120,28,109,255:0.352941;128,31,108,255:0.372549;136,34,106,255:0.392157;144,37,104,255:0.411765;152,39,102,255:0.431373;160,42,99,255:0.45098;168,46,95,255:0.470588;176,49,91,255:0.490196;183,53,87,255:0.509804;191,57,82,255:0.529412;198,61,77,255:0.54902;204,66,72,255:0.568627;211,71,67,255:0.588235;217,77,61,255:0.607843;223,83,55,255:0.627451;228,90,49,255:0.647059;233,97,43,255:0.666667;237,105,37,255:0.686275;241,113,31,255:0.705882;244,121,24,255:0.72549;247,130,18,255:0.745098;249,139,11,255:0.764706;250,148,7,255:0.784314;251,157,7,255:0.803922;252,166,12,255:0.823529;252,176,20,255:0.843137;251,186,31,255:0.862745;250,196,42,255:0.882353;248,205,55,255:0.901961;246,215,70,255:0.921569;244,225,86,255:0.941176;242,234,105,255:0.960784;242,242,125,255:0.980392;245,249,146,255" type="QString"/>
            </Option>
            <prop k="color1" v="0,0,4,255"/>
            <prop k="color2" v="252,255,164,255"/>
            <prop k="discrete" v="0"/>
            <prop k="rampType" v="gradient"/>
            <prop k="stops" v="0.0196078;2,2,12,255:0.0392157;5,4,23,255:0.0588235;10,7,34,255:0.0784314;16,9,45,255:0.0980392;22,11,57,255:0.117647;30,12,69,255:0.137255;38,12,81,255:0.156863;47,10,91,255:0.176471;56,9,98,255:0.196078;64,10,103,255:0.215686;73,11,106,255:0.235294;81,14,108,255:0.254902;89,16,110,255:0.27451;97,19,110,255:0.294118;105,22,110,255:0.313725;113,25,110,255:0.333333;120,28,109,255:0.352941;128,31,108,255:0.372549;136,34,106,255:0.392157;144,37,104,255:0.411765;152,39,102,255:0.431373;160,42,99,255:0.45098;168,46,95,255:0.470588;176,49,91,255:0.490196;183,53,87,255:0.509804;191,57,82,255:0.529412;198,61,77,255:0.54902;204,66,72,255:0.568627;211,71,67,255:0.588235;217,77,61,255:0.607843;223,83,55,255:0.627451;228,90,49,255:0.647059;233,97,43,255:0.666667;237,105,37,255:0.686275;241,113,31,255:0.705882;244,121,24,255:0.72549;247,130,18,255:0.745098;249,139,11,255:0.764706;250,148,7,255:0.784314;251,157,7,255:0.803922;252,166,12,255:0.823529;252,176,20,255:0.843137;251,186,31,255:0.862745;250,196,42,255:0.882353;248,205,55,255:0.901961;246,215,70,255:0.921569;244,225,86,255:0.941176;242,234,105,255:0.960784;242,242,125,255:0.980392;245,249,146,255"/>
          </colorramp>
          <item alpha="255" value="0" label="0" color="#000004"/>
          <item alpha="255" value="0.0196078" label="0.0196" color="#02020c"/>
          <item alpha="255" value="0.0392157" label="0.0392" color="#050417"/>
          <item alpha="255" value="0.0588235" label="0.0588" color="#0a0722"/>
          <item alpha="255" value="0.0784314" label="0.0784" color="#10092d"/>
          <item alpha="255" value="0.0980392" label="0.098" color="#160b39"/>
          <item alpha="255" value="0.117647" label="0.118" color="#1e0c45"/>
          <item alpha="255" value="0.137255" label="0.137" color="#260c51"/>
          <item alpha="255" value="0.156863" label="0.157" color="#2f0a5b"/>
          <item alpha="255" value="0.176471" label="0.176" color="#380962"/>
          <item alpha="255" value="0.196078" label="0.196" color="#400a67"/>
          <item alpha="255" value="0.215686" label="0.216" color="#490b6a"/>
          <item alpha="255" value="0.235294" label="0.235" color="#510e6c"/>
          <item alpha="255" value="0.254902" label="0.255" color="#59106e"/>
          <item alpha="255" value="0.27451" label="0.275" color="#61136e"/>
          <item alpha="255" value="0.294118" label="0.294" color="#69166e"/>
          <item alpha="255" value="0.313725" label="0.314" color="#71196e"/>
          <item alpha="255" value="0.333333" label="0.333" color="#781c6d"/>
          <item alpha="255" value="0.352941" label="0.353" color="#801f6c"/>
          <item alpha="255" value="0.372549" label="0.373" color="#88226a"/>
          <item alpha="255" value="0.392157" label="0.392" color="#902568"/>
          <item alpha="255" value="0.411765" label="0.412" color="#982766"/>
          <item alpha="255" value="0.431373" label="0.431" color="#a02a63"/>
          <item alpha="255" value="0.45098" label="0.451" color="#a82e5f"/>
          <item alpha="255" value="0.470588" label="0.471" color="#b0315b"/>
          <item alpha="255" value="0.490196" label="0.49" color="#b73557"/>
          <item alpha="255" value="0.509804" label="0.51" color="#bf3952"/>
          <item alpha="255" value="0.529412" label="0.529" color="#c63d4d"/>
          <item alpha="255" value="0.54902" label="0.549" color="#cc4248"/>
          <item alpha="255" value="0.568627" label="0.569" color="#d34743"/>
          <item alpha="255" value="0.588235" label="0.588" color="#d94d3d"/>
          <item alpha="255" value="0.607843" label="0.608" color="#df5337"/>
          <item alpha="255" value="0.627451" label="0.627" color="#e45a31"/>
          <item alpha="255" value="0.647059" label="0.647" color="#e9612b"/>
          <item alpha="255" value="0.666667" label="0.667" color="#ed6925"/>
          <item alpha="255" value="0.686275" label="0.686" color="#f1711f"/>
          <item alpha="255" value="0.705882" label="0.706" color="#f47918"/>
          <item alpha="255" value="0.72549" label="0.725" color="#f78212"/>
          <item alpha="255" value="0.745098" label="0.745" color="#f98b0b"/>
          <item alpha="255" value="0.764706" label="0.765" color="#fa9407"/>
          <item alpha="255" value="0.784314" label="0.784" color="#fb9d07"/>
          <item alpha="255" value="0.803922" label="0.804" color="#fca60c"/>
          <item alpha="255" value="0.823529" label="0.824" color="#fcb014"/>
          <item alpha="255" value="0.843137" label="0.843" color="#fbba1f"/>
          <item alpha="255" value="0.862745" label="0.863" color="#fac42a"/>
          <item alpha="255" value="0.882353" label="0.882" color="#f8cd37"/>
          <item alpha="255" value="0.901961" label="0.902" color="#f6d746"/>
          <item alpha="255" value="0.921569" label="0.922" color="#f4e156"/>
          <item alpha="255" value="0.941176" label="0.941" color="#f2ea69"/>
          <item alpha="255" value="0.960784" label="0.961" color="#f2f27d"/>
          <item alpha="255" value="0.980392" label="0.98" color="#f5f992"/>
          <item alpha="255" value="1" label="1" color="#fcffa4"/>
          <rampLegendSettings direction="0" useContinuousLegend="1" orientation="2" prefix="" minimumLabel="" suffix="" maximumLabel="">
            <numericFormat id="basic">
              <Option type="Map">
                <Option name="decimal_separator" value="" type="QChar"/>
                <Option name="decimals" value="6" type="int"/>
                <Option name="rounding_type" value="0" type="int"/>
                <Option name="show_plus" value="false" type="bool"/>
                <Option name="show_thousand_separator" value="true" type="bool"/>
                <Option name="show_trailing_zeros" value="false" type="bool"/>
                <Option name="thousand_separator" value="" type="QChar"/>
              </Option>
            </numericFormat>
          </rampLegendSettings>
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation colorizeBlue="128" saturation="0" colorizeRed="255" colorizeGreen="128" colorizeOn="0" invertColors="0" colorizeStrength="100" grayscaleMode="0"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
