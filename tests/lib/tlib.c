int tlib_placeholder;
