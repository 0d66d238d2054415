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
              <Option name="color1" value="68,1,84,255" type="QString"/>
              <Option name="color2" value="253,231,37,255" type="QString"/>
              <Option name="discrete" value="0" type="QString"/>
              <Option name="rampType" value="gradient" type="QString"/>
              <Option name="stops" value="0.0196078;70,8,92,255:0.0392157;71,16,99,255:0.0588235;72,23,105,255:0.0784314;72,29,111,255:0.0980392;72,36,117,255:0.117647;71,42,122,255:0.137255;70,48,126,255:0.156863;69,55,129,255:0.176471;67,61,132,255:0.196078;65,66,135,255:0.215686;63,72,137,255:0.235294;61,78,138,255:0.254902;58,83,139,255:0.27451;56,89,140,255:0.294118;53,94,141,255:0.313725;51,99,141,255:0.333333;49,104,142,255:0.352941;46,109,142,255:0.372549;44,113,142,255:0.392157;42,118,142,255:0.411765;41,123,142,255:0.431373;39,128,142,255:0.45098;37,132,142,255:0.470588;35,137,142,255:0.490196;33,142,141,255:0.509804;32,146,140,255:0.529412;31,151,139,255:0.54902;30,156,137,255:0.568627;31,161,136,255:0.588235;33,165,133,255:0.607843;36,170,131,255:0.627451;40,174,128,255:0.647059;46,179,124,255:0.666667;53,183,121,255:0.686275;61,188,116,255:0.705882;70,192,111,255:0.72549;80,196,106,255:0.745098;90,200,100,255:0.764706;101,203,94,255:0.784314;112,207,87,255:0.803922;124,210,80,255:0.823529;137,213,72,255:0.843137;149,216,64,255:0.862745;162,218,55,255:0.882353;176,221,47,255:0.901961;189,223,38,255:0.921569;202,225,31,255:0.941176;216,226,25,255:0.960784;229,228,25,255:0.980392;241,229,29,255" type="QString"/>
            </Option>
            <prop k="color1" v="68,1,84,255"/>
            <prop k="color2" v="253,231,37,255"/>
            <prop k="discrete" v="0"/>
            <prop k="rampType" v="gradient"/>
            <prop k="stops" v="0.0196078;70,8,92,255:0.0392157;71,16,99,255:0.0588235;72,23,105,255:0.0784314;72,29,111,255:0.0980392;72,36,117,255:0.117647;71,42,122,255:0.137255;70,48,126,255:0.156863;69,55,129,255:0.176471;67,61,132,255:0.196078;65,66,135,255:0.215686;63,72,137,255:0.235294;61,78,138,255:0.254902;58,83,139,255:0.27451;56,89,140,255:0.294118;53,94,141,255:0.313725;51,99,141,255:0.333333;49,104,142,255:0.352941;46,109,142,255:0.372549;44,113,142,255:0.392157;42,118,142,255:0.411765;41,123,142,255:0.431373;39,128,142,255:0.45098;37,132,142,255:0.470588;35,137,142,255:0.490196;33,142,141,255:0.509804;32,146,140,255:0.529412;31,151,139,255:0.54902;30,156,137,255:0.568627;31,161,136,255:0.588235;33,165,133,255:0.607843;36,170,131,255:0.627451;40,174,128,255:0.647059;46,179,124,255:0.666667;53,183,121,255:0.686275;61,188,116,255:0.705882;70,192,111,255:0.72549;80,196,106,255:0.745098;90,200,100,255:0.764706;101,203,94,255:0.784314;112,207,87,255:0.803922;124,210,80,255:0.823529;137,213,72,255:0.843137;149,216,64,255:0.862745;162,218,55,255:0.882353;176,221,47,255:0.901961;189,223,38,255:0.921569;202,225,31,255:0.941176;216,226,25,255:0.960784;229,228,25,255:0.980392;241,229,29,255"/>
          </colorramp>
          <item alpha="255" value="0" label="0" color="#440154"/>
          <item alpha="255" value="0.0196078" label="0.0196" color="#46085c"/>
          <item alpha="255" value="0.0392157" label="0.0392" color="#471063"/>
          <item alpha="255" value="0.0588235" label="0.0588" color="#481769"/>
          <item alpha="255" value="0.0784314" label="0.0784" color="#481d6f"/>
          <item alpha="255" value="0.0980392" label="0.098" color="#482475"/>
          <item alpha="255" value="0.117647" label="0.118" color="#472a7a"/>
          <item alpha="255" value="0.137255" label="0.137" color="#46307e"/>
          <item alpha="255" value="0.156863" label="0.157" color="#453781"/>
          <item alpha="255" value="0.176471" label="0.176" color="#433d84"/>
          <item alpha="255" value="0.196078" label="0.196" color="#414287"/>
          <item alpha="255" value="0.215686" label="0.216" color="#3f4889"/>
          <item alpha="255" value="0.235294" label="0.235" color="#3d4e8a"/>
          <item alpha="255" value="0.254902" label="0.255" color="#3a538b"/>
          <item alpha="255" value="0.27451" label="0.275" color="#38598c"/>
          <item alpha="255" value="0.294118" label="0.294" color="#355e8d"/>
          <item alpha="255" value="0.313725" label="0.314" color="#33638d"/>
          <item alpha="255" value="0.333333" label="0.333" color="#31688e"/>
          <item alpha="255" value="0.352941" label="0.353" color="#2e6d8e"/>
          <item alpha="255" value="0.372549" label="0.373" color="#2c718e"/>
          <item alpha="255" value="0.392157" label="0.392" color="#2a768e"/>
          <item alpha="255" value="0.411765" label="0.412" color="#297b8e"/>
          <item alpha="255" value="0.431373" label="0.431" color="#27808e"/>
          <item alpha="255" value="0.45098" label="0.451" color="#25848e"/>
          <item alpha="255" value="0.470588" label="0.471" color="#23898e"/>
          <item alpha="255" value="0.490196" label="0.49" color="#218e8d"/>
          <item alpha="255" value="0.509804" label="0.51" color="#20928c"/>
          <item alpha="255" value="0.529412" label="0.529" color="#1f978b"/>
          <item alpha="255" value="0.54902" label="0.549" color="#1e9c89"/>
          <item alpha="255" value="0.568627" label="0.569" color="#1fa188"/>
          <item alpha="255" value="0.588235" label="0.588" color="#21a585"/>
          <item alpha="255" value="0.607843" label="0.608" color="#24aa83"/>
          <item alpha="255" value="0.627451" label="0.627" color="#28ae80"/>
          <item alpha="255" value="0.647059" label="0.647" color="#2eb37c"/>
          <item alpha="255" value="0.666667" label="0.667" color="#35b779"/>
          <item alpha="255" value="0.686275" label="0.686" color="#3dbc74"/>
          <item alpha="255" value="0.705882" label="0.706" color="#46c06f"/>
          <item alpha="255" value="0.72549" label="0.725" color="#50c46a"/>
          <item alpha="255" value="0.745098" label="0.745" color="#5ac864"/>
          <item alpha="255" value="0.764706" label="0.765" color="#65cb5e"/>
          <item alpha="255" value="0.784314" label="0.784" color="#70cf57"/>
          <item alpha="255" value="0.803922" label="0.804" color="#7cd250"/>
          <item alpha="255" value="0.823529" label="0.824" color="#89d548"/>
          <item alpha="255" value="0.843137" label="0.843" color="#95d840"/>
          <item alpha="255" value="0.862745" label="0.863" color="#a2da37"/>
          <item alpha="255" value="0.882353" label="0.882" color="#b0dd2f"/>
          <item alpha="255" value="0.901961" label="0.902" color="#bddf26"/>
          <item alpha="255" value="0.921569" label="0.922" color="#cae11f"/>
          <item alpha="255" value="0.941176" label="0.941" color="#d8e219"/>
          <item alpha="255" value="0.960784" label="0.961" color="#e5e419"/>
          <item alpha="255" value="0.980392" label="0.98" color="#f1e51d"/>
          <item alpha="255" value="1" label="1" color="#fde725"/>
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
