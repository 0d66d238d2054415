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
              <Option name="color2" value="252,253,191,255" type="QString"/>
              <Option name="discrete" value="0" type="QString"/>
              <Option name="rampType" value="gradient" type="QString"/>
              <Option name="stops" value="0.0196078;2,2,11,255:0.0392157;5,4,22,255:0.0588235;9,7,32,255:0.0784314;14,11,43,255:0.0980392;20,14,54,255:0.117647;26,16,66,255:0.137255;33,17,78,255:0.156863;41,17,90,255:0.176471;49,17,101,255:0.196078;57,15,110,255:0.215686;66,15,117,255:0.235294;74,16,121,255:0.254902;82,19,124,255:0.27451;90,22,126,255:0.294118;98,25,128,255:0.313725;106,28,129,255:0.333333;114,31,129,255:0.352941;121,34,130,255:0.372549;129,37,129,255:0.392157;137,40,129,255:0.411765;145,43,129,255:0.431373;153,45,128,255:0.45098;161,48,126,255:0.470588;170,51,125,255:0.490196;178,53,123,255:0.509804;186,56,120,255:0.529412;194,59,117,255:0.54902;202,62,114,255:0.568627;210,66,111,255:0.588235;217,70,107,255:0.607843;224,76,103,255:0.627451;231,82,99,255:0.647059;236,88,96,255:0.666667;241,96,93,255:0.686275;244,105,92,255:0.705882;247,114,92,255:0.72549;249,123,93,255:0.745098;251,133,96,255:0.764706;252,142,100,255:0.784314;253,152,105,255:0.803922;254,161,110,255:0.823529;254,170,116,255:0.843137;254,180,123,255:0.862745;254,189,130,255:0.882353;254,198,138,255:0.901961;254,207,146,255:0.921569;254,216,154,255:0.941176;253,226,163,255:0.960784;253,235,172,255:0.980392;252,244,182,255" type="QString"/>
            </Option>
            <prop k="color1" v="0,0,4,255"/>
            <prop k="color2" v="252,253,191,255"/>
            <prop k="discrete" v="0"/>
            <prop k="rampType" v="gradient"/>
            <prop k="stops" v="0.0196078;2,2,11,255:0.0392157;5,4,22,255:0.0588235;9,7,32,255:0.0784314;14,11,43,255:0.0980392;20,14,54,255:0.117647;26,16,66,255:0.137255;33,17,78,255:0.156863;41,17,90,255:0.176471;49,17,101,255:0.196078;57,15,110,255:0.215686;66,15,117,255:0.235294;74,16,121,255:0.254902;82,19,124,255:0.27451;90,22,126,255:0.294118;98,25,128,255:0.313725;106,28,129,255:0.333333;114,31,129,255:0.352941;121,34,130,255:0.372549;129,37,129,255:0.392157;137,40,129,255:0.411765;145,43,129,255:0.431373;153,45,128,255:0.45098;161,48,126,255:0.470588;170,51,125,255:0.490196;178,53,123,255:0.509804;186,56,120,255:0.529412;194,59,117,255:0.54902;202,62,114,255:0.568627;210,66,111,255:0.588235;217,70,107,255:0.607843;224,76,103,255:0.627451;231,82,99,255:0.647059;236,88,96,255:0.666667;241,96,93,255:0.686275;244,105,92,255:0.705882;247,114,92,255:0.72549;249,123,93,255:0.745098;251,133,96,255:0.764706;252,142,100,255:0.784314;253,152,105,255:0.803922;254,161,110,255:0.823529;254,170,116,255:0.843137;254,180,123,255:0.862745;254,189,130,255:0.882353;254,198,138,255:0.901961;254,207,146,255:0.921569;254,216,154,255:0.941176;253,226,163,255:0.960784;253,235,172,255:0.980392;252,244,182,255"/>
          </colorramp>
          <item alpha="255" value="0" label="0" color="#000004"/>
          <item alpha="255" value="0.0196078" label="0.0196" color="#02020b"/>
          <item alpha="255" value="0.0392157" label="0.0392" color="#050416"/>
          <item alpha="255" value="0.0588235" label="0.0588" color="#090720"/>
          <item alpha="255" value="0.0784314" label="0.0784" color="#0e0b2b"/>
          <item alpha="255" value="0.0980392" label="0.098" color="#140e36"/>
          <item alpha="255" value="0.117647" label="0.118" color="#1a1042"/>
          <item alpha="255" value="0.137255" label="0.137" color="#21114e"/>
          <item alpha="255" value="0.156863" label="0.157" color="#29115a"/>
          <item alpha="255" value="0.176471" label="0.176" color="#311165"/>
          <item alpha="255" value="0.196078" label="0.196" color="#390f6e"/>
          <item alpha="255" value="0.215686" label="0.216" color="#420f75"/>
          <item alpha="255" value="0.235294" label="0.235" color="#4a1079"/>
          <item alpha="255" value="0.254902" label="0.255" color="#52137c"/>
          <item alpha="255" value="0.27451" label="0.275" color="#5a167e"/>
          <item alpha="255" value="0.294118" label="0.294" color="#621980"/>
          <item alpha="255" value="0.313725" label="0.314" color="#6a1c81"/>
          <item alpha="255" value="0.333333" label="0.333" color="#721f81"/>
          <item alpha="255" value="0.352941" label="0.353" color="#792282"/>
          <item alpha="255" value="0.372549" label="0.373" color="#812581"/>
          <item alpha="255" value="0.392157" label="0.392" color="#892881"/>
          <item alpha="255" value="0.411765" label="0.412" color="#912b81"/>
          <item alpha="255" value="0.431373" label="0.431" color="#992d80"/>
          <item alpha="255" value="0.45098" label="0.451" color="#a1307e"/>
          <item alpha="255" value="0.470588" label="0.471" color="#aa337d"/>
          <item alpha="255" value="0.490196" label="0.49" color="#b2357b"/>
          <item alpha="255" value="0.509804" label="0.51" color="#ba3878"/>
          <item alpha="255" value="0.529412" label="0.529" color="#c23b75"/>
          <item alpha="255" value="0.54902" label="0.549" color="#ca3e72"/>
          <item alpha="255" value="0.568627" label="0.569" color="#d2426f"/>
          <item alpha="255" value="0.588235" label="0.588" color="#d9466b"/>
          <item alpha="255" value="0.607843" label="0.608" color="#e04c67"/>
          <item alpha="255" value="0.627451" label="0.627" color="#e75263"/>
          <item alpha="255" value="0.647059" label="0.647" color="#ec5860"/>
          <item alpha="255" value="0.666667" label="0.667" color="#f1605d"/>
          <item alpha="255" value="0.686275" label="0.686" color="#f4695c"/>
          <item alpha="255" value="0.705882" label="0.706" color="#f7725c"/>
          <item alpha="255" value="0.72549" label="0.725" color="#f97b5d"/>
          <item alpha="255" value="0.745098" label="0.745" color="#fb8560"/>
          <item alpha="255" value="0.764706" label="0.765" color="#fc8e64"/>
          <item alpha="255" value="0.784314" label="0.784" color="#fd9869"/>
          <item alpha="255" value="0.803922" label="0.804" color="#fea16e"/>
          <item alpha="255" value="0.823529" label="0.824" color="#feaa74"/>
          <item alpha="255" value="0.843137" label="0.843" color="#feb47b"/>
          <item alpha="255" value="0.862745" label="0.863" color="#febd82"/>
          <item alpha="255" value="0.882353" label="0.882" color="#fec68a"/>
          <item alpha="255" value="0.901961" label="0.902" color="#fecf92"/>
          <item alpha="255" value="0.921569" label="0.922" color="#fed89a"/>
          <item alpha="255" value="0.941176" label="0.941" color="#fde2a3"/>
          <item alpha="255" value="0.960784" label="0.961" color="#fdebac"/>
          <item alpha="255" value="0.980392" label="0.98" color="#fcf4b6"/>
          <item alpha="255" value="1" label="1" color="#fcfdbf"/>
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
